"""How a method places the model: the plan choice, the plan it gives, and the default number of
microbatches. No jax: planning, ``simulate`` and ``verify``'s arithmetic use it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxpart.config import ConfigError, MeshConfig, Method, ModelConfig, RunShape, Strategy
from jaxpart.planning.baseline import DEFAULT_PP, DEFAULT_TP, baseline_plan
from jaxpart.planning.memory import kv_heads_per_device
from jaxpart.planning.plan import Plan, make_plan, microbatch_count, with_replicas

METHODS = tuple(Method)


@dataclass(frozen=True)
class PlanChoice:
    """How to place the model: for the layer-wise method, the partitioner's arguments."""

    capacity: str | None = None
    strategy: Strategy = Strategy.GREEDY
    layers_per_stage: tuple[int, ...] | None = None
    tp: int = DEFAULT_TP
    pp: int = DEFAULT_PP
    # Plans found by `--auto` (jaxpart.perf.search): method -> (plan, microbatches); they replace
    # the partitioner's and the TP x PP arguments for that method.
    found: tuple[tuple[Method, Plan, int], ...] = ()

    def found_for(self, method: Method) -> tuple[Plan, int] | None:
        return next(((p, m) for name, p, m in self.found if name == method), None)


DEFAULT_CHOICE = PlanChoice()


def plan_for(
    method: Method, cfg: ModelConfig, mesh: MeshConfig, shape: RunShape, choice: PlanChoice
) -> Plan | None:
    """The plan ``method`` runs ``shape`` with (None: the single-device reference)."""
    if method == Method.REFERENCE:
        return None
    if choice.found_for(method):
        return choice.found_for(method)[0]
    if method == Method.BASELINE:
        return baseline_plan(cfg, mesh, shape, choice.tp, choice.pp)
    if method == Method.LAYERWISE:
        return make_plan(
            cfg,
            mesh,
            shape,
            capacity=choice.capacity,
            strategy=choice.strategy,
            layers_per_stage=choice.layers_per_stage,
        )
    raise ConfigError(f"--method = {method!r}: use one of {list(METHODS)}")


def microbatches_for(plan: Plan | None, shape: RunShape) -> int:
    """``shape.microbatches``, else enough to fill the pipe (M >= stages) that divide each
    replica's batch (1 for the single-device reference)."""
    if shape.microbatches is not None:
        return shape.microbatches
    if plan is None:
        return 1
    return microbatch_count(plan.n_stages, shape.batch // plan.data_parallel)


def fill_replicas(plan: Plan | None, shape: RunShape) -> Plan | None:
    """A replicated plan whose replicas the batch cannot fill evenly (a batch of 1 on 8 copies
    of the pipeline) runs as many replicas as divide the batch: the greatest common divisor of
    the two, with a note saying so. Given --microbatches, the plan stays as it is."""
    if plan is None or plan.data_parallel == 1 or shape.microbatches is not None:
        return plan
    if shape.batch % plan.data_parallel == 0:
        return plan
    replicas = math.gcd(shape.batch, plan.data_parallel)
    return with_replicas(
        plan,
        replicas,
        f"replicas: a batch of {shape.batch} fills {replicas} of the plan's "
        f"{plan.data_parallel} replicas evenly: running {replicas} "
        f"({replicas * plan.n_stages * plan.split} of {plan.n_devices} devices)",
    )


def resolved(method: Method, plan: Plan | None, shape: RunShape, choice: PlanChoice) -> RunShape:
    """``shape`` with its microbatches settled for ``plan``: given, found by --auto, or the
    default; checked against the plan's replicas."""
    if plan is None:  # the single-device reference runs the batch whole
        return shape.replace(microbatches=1)
    found = choice.found_for(method)
    m = shape.microbatches or (found[1] if found else None) or microbatches_for(plan, shape)
    out = shape.replace(microbatches=m)
    out.check_split(plan.data_parallel if plan else 1, m)
    return out


def decode_shapes(models: list[tuple[ModelConfig, RunShape]], mesh: MeshConfig) -> list[dict]:
    """Each model's decode step in both placements on ``mesh``, at its run shape and default
    microbatches: the rows of a microbatch and the per-device MLP matrices. A model the mesh
    cannot place one way is left out of that way."""
    out = []
    for cfg, shape in models:
        for method in (Method.LAYERWISE, Method.BASELINE):
            try:
                plan = plan_for(method, cfg, mesh, shape, DEFAULT_CHOICE)
            except ConfigError:
                continue
            per_replica = shape.batch // plan.data_parallel
            rows = per_replica // microbatches_for(plan, shape)
            layers = max(len(s.layers) for s in plan.stages)
            out.append(
                {
                    "model": cfg.name,
                    "method": method,
                    "rows": rows,
                    "layers_per_stage": layers,
                    "split": plan.split,
                    "d_model": cfg.d_model,
                    "d_ff": cfg.d_ff // plan.split,
                    "heads": cfg.n_heads // plan.split,
                    "kv_heads": kv_heads_per_device(cfg, plan.split),
                    "head_dim": cfg.head_dim,
                    "mlp": cfg.mlp,
                }
            )
    return out
