"""`jaxpart plan --auto`: every placement worth trying, kept if it fits HBM by the memory model,
ranked by the performance model. No jax.

It enumerates TP x PP (every tensor split and pipeline depth that divide the model and the mesh,
replicated over the rest), layer-wise plans (greedy at every capacity tier; balanced over every
stage count that uses the whole mesh with data-parallel replicas, one device a stage unless a
layer needs a tensor split, by bytes and by time with the LM head on the last stage), and
every microbatch count that divides a replica's batch. A plan both enumerations make (equal
stages at one split) is listed under both, each naming the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxpart.config import (
    PLACEMENTS,
    TIER_NAMES,
    Backend,
    ConfigError,
    FitDefinition,
    MeshConfig,
    Method,
    ModelConfig,
    RunShape,
    Strategy,
)
from jaxpart.perf.engines import Engine
from jaxpart.perf.predict import JAXPART, Constants, Prediction, constants_from, predict
from jaxpart.planning.baseline import baseline_plan
from jaxpart.planning.capacity import Capacity, balanced_split, even_split, plan_capacity
from jaxpart.planning.memory import (
    check_pod,
    device_memory,
    layer_fit_bytes,
    layer_weight_bytes,
    valid_splits,
)
from jaxpart.planning.partition import plan_balanced
from jaxpart.planning.plan import (
    Plan,
    assemble_plan,
    device_overhead,
    make_plan,
    microbatch_count,
    microbatch_rows,
)

OBJECTIVES = ("throughput", "max-throughput", "tpot", "ttft")


@dataclass(frozen=True)
class Candidate:
    method: Method
    how: str  # how the plan was made, in words
    plan: Plan
    microbatches: int
    prediction: Prediction
    memory_bytes: int  # per device, the fullest stage's, by memory.device_memory
    capacity: Capacity  # the largest batch its KV pools hold at the run's context
    shape: RunShape  # the run it was predicted for (max-throughput: at ``capacity.batch``)

    def cost(self, objective: str) -> float:
        """Smaller is better."""
        if objective in ("throughput", "max-throughput"):
            return -self.prediction.tps
        if objective == "tpot":
            return self.prediction.tpot_ms
        return self.prediction.ttft_ms

    def deciding_terms(self) -> str:
        """The two largest parts of a decode tick, in microseconds."""
        tick = self.prediction.decode_tick
        top = sorted(tick.parts().items(), key=lambda kv: -kv[1])[:2]
        return ", ".join(f"{k} {v:.0f}" for k, v in top) + f" of {tick.tick_us:.0f} us"

    def to_dict(self) -> dict:
        p = self.plan
        return {
            "method": self.method,
            "how": self.how,
            "stages": p.n_stages,
            "split": p.split,
            "replicas": p.data_parallel,
            "layers_per_stage": p.layers_per_stage,
            "microbatches": self.microbatches,
            "batch": self.shape.batch,
            "memory_bytes_per_device": self.memory_bytes,
            "capacity": self.capacity.to_dict(),
            "deciding_terms": self.deciding_terms(),
            "prediction": self.prediction.to_dict(),
            "plan": p.to_dict(),
        }


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _baseline_plans(cfg: ModelConfig, mesh: MeshConfig, shape: RunShape, engine: Engine):
    """Every TP x PP, with the engine's default (even) split and, where it differs, the split
    that gives the tightest stage the most KV room (``capacity.balanced_split``)."""
    n = mesh.n_devices
    for tp in valid_splits(cfg):
        for pp in range(1, cfg.n_layers + 1):  # uneven stages where PP does not divide L
            if tp * pp <= n and n % (tp * pp) == 0:
                yield f"TP{tp}xPP{pp}", baseline_plan(cfg, mesh, shape, tp, pp)
                balanced = balanced_split(cfg, mesh, pp, tp, shape, engine.memory)
                if balanced != even_split(cfg.n_layers, pp):
                    how = f"TP{tp}xPP{pp} balanced {'-'.join(map(str, balanced))}"
                    yield how, baseline_plan(cfg, mesh, shape, tp, pp, sizes=balanced)


def _time_weights(cfg: ModelConfig, shape: RunShape, split: int) -> list[int]:
    """Per-layer bytes a decode step reads, and the LM head's as one more item at the end, so
    that a balanced partition gives the last stage fewer layers to make up for its head."""
    head = cfg.d_model * cfg.vocab * cfg.embed_bytes_each
    return [layer_fit_bytes(cfg, shape, FitDefinition.EVERYTHING, split)] * cfg.n_layers + [head]


def _layerwise_plans(cfg: ModelConfig, mesh: MeshConfig, shape: RunShape, engine: Engine):
    for tier in TIER_NAMES:
        try:
            yield f"greedy at {tier}", make_plan(cfg, mesh, shape, capacity=tier)
        except ConfigError:
            continue
    n, L, hbm = mesh.n_devices, cfg.n_layers, mesh.tiers["hbm"].capacity_bytes
    # Layer-wise: one device a stage, or the smallest tensor split that lets a layer fit (as
    # make_plan); wider splits of equal stages are TP x PP, enumerated there.
    fitting = [
        t
        for t in valid_splits(cfg)
        if layer_fit_bytes(cfg, shape, FitDefinition.EVERYTHING, t)
        + device_overhead(cfg, mesh, shape, t, 1)
        <= hbm
    ]
    for split in fitting[:1]:
        layer_bytes = [layer_fit_bytes(cfg, shape, FitDefinition.EVERYTHING, split)] * L
        for stages in range(1, min(L, n // split) + 1):
            if n % (stages * split):
                continue
            replicas = n // (stages * split)
            rows = microbatch_rows(shape, replicas, stages)
            by_bytes = plan_balanced(layer_bytes, stages)
            by_time = plan_balanced(_time_weights(cfg, shape, split), stages)
            by_time[-1] = [i for i in by_time[-1] if i < L]
            for name, partition in (("balanced", by_bytes), ("balanced with the head", by_time)):
                if not all(partition):
                    continue
                yield (
                    f"{name}, {stages} stage(s)",
                    assemble_plan(
                        cfg,
                        mesh,
                        shape,
                        partition,
                        split,
                        replicas,
                        Strategy.BALANCED,
                        "derived",
                        FitDefinition.EVERYTHING,
                        "hbm",
                        hbm,
                        layer_bytes,
                        [f"found by plan --auto: {name} over {stages} stage(s)"],
                        overhead=device_overhead(cfg, mesh, shape, split, rows),
                    ),
                )


def _fits(cfg, mesh, plan: Plan, rows: int, cache_rows: int, prompt_len: int) -> int | None:
    """The fullest stage's bytes per device, or None if it exceeds HBM."""
    mem = device_memory(
        cfg,
        max(len(s.layers) for s in plan.stages),
        plan.split,
        cache_rows=cache_rows,
        rows=rows,
        prompt_len=prompt_len,
        attention=Backend.auto_on(mesh.platform),
        platform=mesh.platform,
    )
    return mem.total if mem.total <= mesh.tiers["hbm"].capacity_bytes else None


def candidates(
    cfg: ModelConfig,
    mesh: MeshConfig,
    c: Constants,
    shape: RunShape,
    *,
    methods: tuple[Method, ...] = PLACEMENTS,
    engine: Engine = JAXPART,
    at_capacity: bool = False,
):
    """Every distinct (plan, microbatches) that fits HBM, predicted as ``engine`` runs it:
    every microbatch count that divides a replica's batch, or only ``shape.microbatches`` when
    it is given. A plan whose KV pools cannot hold the batch (``planning.capacity``) is left
    out. ``at_capacity``: each plan at the largest batch it holds instead, with enough
    microbatches to fill its pipe."""
    seen: dict[tuple, str] = {}  # plan structure -> how the first method made it
    sources = {Method.BASELINE: _baseline_plans, Method.LAYERWISE: _layerwise_plans}
    for method in methods:
        for how, plan in sources[method](cfg, mesh, shape, engine):
            layout = (tuple(s.layers for s in plan.stages), plan.split, plan.data_parallel)
            if (method, layout) in seen:
                continue
            seen[(method, layout)] = how
            same = [h for (m, sh), h in seen.items() if sh == layout and m != method]
            if same:  # equal stages at the same split: both methods make this plan
                how = f"{how} (= {same[0]})"
            room = plan_capacity(cfg, mesh, plan, shape, engine.memory)
            run = shape
            if at_capacity:  # the most sequences it holds, in whole rounds of its stages
                per_replica = room.in_rounds(plan.n_stages)
                if per_replica < 1:
                    continue
                run = shape.replace(batch=per_replica * plan.data_parallel, microbatches=None)
            elif run.batch % plan.data_parallel or run.batch > room.batch:
                continue
            per_replica = run.batch // plan.data_parallel
            if at_capacity:
                counts = [microbatch_count(plan.n_stages, per_replica)]
            else:
                counts = [run.microbatches] if run.microbatches else _divisors(per_replica)
            for m in counts:
                if per_replica % m:
                    continue
                if engine is JAXPART and not at_capacity:  # the memory model's whole account
                    size = _fits(cfg, mesh, plan, per_replica // m, per_replica, run.prompt_len)
                    if size is None:
                        continue
                else:  # its KV pool at this batch beside the fixed bytes (planning.capacity)
                    size = max(
                        st.fixed_bytes + st.kv_bytes_per_sequence * per_replica
                        for st in room.stages
                    )
                at = run.replace(microbatches=m)
                pred = predict(method, cfg, plan, c, at, engine=engine)
                yield Candidate(method, how, plan, m, pred, size, room, at)


def search_plans(
    cfg: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    *,
    objective: str = "throughput",
    constants: Constants | None = None,
    methods: tuple[Method, ...] = PLACEMENTS,
    engine: Engine = JAXPART,
) -> list[Candidate]:
    """Every placement of ``cfg`` on ``mesh`` that fits HBM, best first by ``objective``
    (predicted TPS; TPS at the largest batch each plan's KV pools hold, "max-throughput"; or
    TPOT or TTFT for latency) for a run of ``shape``, as ``engine`` runs it."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective = {objective!r}: use one of {list(OBJECTIVES)}")
    shape.check(cfg)
    check_pod(cfg, mesh, shape)
    c = constants or constants_from(mesh)
    at_capacity = objective == "max-throughput"
    found = list(
        candidates(cfg, mesh, c, shape, methods=methods, engine=engine, at_capacity=at_capacity)
    )
    if not found:
        per_layer = layer_weight_bytes(cfg)
        raise ConfigError(
            f"--auto: no placement of {cfg.name} (batch {shape.batch}) fits {mesh.name}'s HBM "
            f"by the memory model (one layer's weights alone: {per_layer:,} bytes)"
        )
    return sorted(found, key=lambda k: k.cost(objective))


def best_of_each(ranked: list[Candidate]) -> dict[Method, Candidate]:
    """The best-ranked candidate of each method."""
    out: dict[Method, Candidate] = {}
    for k in ranked:
        out.setdefault(k.method, k)
    return out
