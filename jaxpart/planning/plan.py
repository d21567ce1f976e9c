"""The Plan: a model's layers as pipeline stages on a mesh, with the devices each stage spans
(its tensor-split degree), the bytes it needs and the smallest memory tier it fits.

``make_plan`` runs a partitioner (``jaxpart.planning.partition``) under a capacity, finds the
smallest tensor split that makes a layer fit, and uses every device of the mesh.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from jaxpart.config import (
    TIER_NAMES,
    Backend,
    FitDefinition,
    MeshConfig,
    Method,
    ModelConfig,
    RunShape,
    Strategy,
    format_bytes,
    parse_size,
)
from jaxpart.planning.memory import (
    FIT_DEFINITIONS,
    TIER_DEFINITION,
    check_pod,
    device_memory,
    layer_fit_bytes,
    valid_splits,
)
from jaxpart.planning.partition import (
    STRATEGIES,
    PlanError,
    bottleneck,
    plan_balanced,
    plan_greedy,
    plan_manual,
)


@dataclass(frozen=True)
class Stage:
    layers: tuple[int, ...]
    devices: tuple[int, ...]  # every device of this stage, across data-parallel replicas
    split: int  # tensor-split degree: devices per stage per replica
    bytes: int  # per device, under the plan's fit definition
    tier: str  # smallest tier it fits: smem, l2, hbm, or "none"
    bytes_by_tier: dict[str, int] = field(default_factory=dict)  # per device, per tier's definition


@dataclass(frozen=True)
class Plan:
    model: str
    mesh: str
    strategy: Strategy | Method  # the partitioner, or Method.BASELINE for TP x PP
    figures: str  # derived | stated
    fit_definition: FitDefinition
    capacity: str  # as given: a tier name or a size
    capacity_bytes: int
    layer_bytes: tuple[int, ...]  # per device, at the plan's split, under fit_definition
    split: int
    data_parallel: int
    stages: tuple[Stage, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    @property
    def n_devices(self) -> int:
        return self.n_stages * self.split * self.data_parallel

    @property
    def layers_per_stage(self) -> list[int]:
        return [len(s.layers) for s in self.stages]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["devices"] = self.n_devices
        d["fit_definition_text"] = FIT_DEFINITIONS[self.fit_definition]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        # what `plan --json` writes beside the plan (derived figures, an engine's settings)
        extra = ("devices", "fit_definition_text", "max_batch", "export")
        d = {k: v for k, v in d.items() if k not in extra}
        stages = tuple(
            Stage(
                layers=tuple(s["layers"]),
                devices=tuple(s["devices"]),
                split=s["split"],
                bytes=s["bytes"],
                tier=s["tier"],
                bytes_by_tier=dict(s["bytes_by_tier"]),
            )
            for s in d.pop("stages")
        )
        strategy = d["strategy"]
        return cls(
            **{
                **d,
                "strategy": Method(strategy) if strategy == Method.BASELINE else Strategy(strategy),
                "fit_definition": FitDefinition(d["fit_definition"]),
                "layer_bytes": tuple(d["layer_bytes"]),
                "notes": tuple(d["notes"]),
            },
            stages=stages,
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def resolve_capacity(capacity: str | None, mesh: MeshConfig) -> tuple[str, int, FitDefinition]:
    """A tier name or a size -> (label, bytes, fit definition).

    A size is read against the mesh: if it is no larger than the l2 tier it is a cache capacity
    (the resident set must fit), otherwise an HBM-like capacity (everything must fit).
    """
    name = capacity or mesh.default_capacity
    if name in mesh.tiers:
        return name, mesh.tiers[name].capacity_bytes, TIER_DEFINITION[name]
    nbytes = parse_size(name, "--capacity")
    for tier in TIER_NAMES:
        if nbytes <= mesh.tiers[tier].capacity_bytes:
            return name, nbytes, TIER_DEFINITION[tier]
    return name, nbytes, TIER_DEFINITION["hbm"]


def microbatch_count(stages: int, per_replica: int) -> int:
    """Enough microbatches to fill the pipe (M >= stages) that divide a replica's batch."""
    fitting = [m for m in range(stages, per_replica + 1) if per_replica % m == 0]
    return fitting[0] if fitting else max(per_replica, 1)


def device_overhead(
    model: ModelConfig, mesh: MeshConfig, shape: RunShape, split: int, rows: int
) -> int:
    """What a device holds besides its layers' weights and KV cache (embedding and head, one
    microbatch of ``rows`` sequences' activations with ``shape``'s prompt, buffers), by
    ``memory.device_memory``, for the attention path a run on the mesh's platform uses."""
    return device_memory(
        model,
        0,
        split,
        cache_rows=0,
        rows=rows,
        prompt_len=shape.prompt_len,
        attention=Backend.auto_on(mesh.platform),
        platform=mesh.platform,
    ).overhead


def _smallest_tier(
    model: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    figures: str,
    split: int,
    n: int,
    overhead: int = 0,
):
    by_tier = {
        tier: n
        * layer_fit_bytes(
            model,
            shape,
            FitDefinition.STATED if figures == "stated" else TIER_DEFINITION[tier],
            split,
        )
        + (
            overhead
            if figures != "stated" and TIER_DEFINITION[tier] == FitDefinition.EVERYTHING
            else 0
        )
        for tier in TIER_NAMES
    }
    for tier in TIER_NAMES:
        if by_tier[tier] <= mesh.tiers[tier].capacity_bytes:
            return tier, by_tier
    return "none", by_tier


def _partition(strategy, layer_bytes, capacity, n_stages, layers_per_stage, n_layers):
    """Stages for one split degree, or None when they do not fit the capacity."""
    if strategy == Strategy.GREEDY:
        if max(layer_bytes) > capacity:
            return None
        return plan_greedy(layer_bytes, capacity)
    if strategy == Strategy.MANUAL:
        stages = plan_manual(layers_per_stage, n_layers)
    else:
        stages = plan_balanced(layer_bytes, n_stages)
    return stages if bottleneck(stages, layer_bytes) <= capacity else None


def make_plan(
    model: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    capacity: str | None = None,
    strategy: Strategy = Strategy.GREEDY,
    devices: int | None = None,
    figures: str = "derived",
    layers_per_stage: Sequence[int] | None = None,
) -> Plan:
    """Plan ``model`` onto ``devices`` under ``capacity`` (both default to the mesh's) for a
    run of ``shape``: the KV caches of its batch, and under HBM one microbatch's activations."""
    if strategy not in STRATEGIES:
        raise PlanError(f"--strategy = {strategy!r}: use one of {list(STRATEGIES)}")
    if figures not in ("derived", "stated"):
        raise PlanError(f"--figures = {figures!r}: use 'derived' or 'stated'")
    if (strategy == Strategy.MANUAL) != (layers_per_stage is not None):
        raise PlanError(
            "--layers-per-stage: give it with --strategy manual, and only then"
            f" (strategy = {strategy!r})"
        )
    n_devices = mesh.n_devices if devices is None else devices
    if n_devices < 1:
        raise PlanError(f"--devices = {n_devices}: must be >= 1")
    label, cap, definition = resolve_capacity(capacity, mesh)
    if figures == "stated":
        definition = FitDefinition.STATED
    else:
        check_pod(model, mesh, shape, n_devices)
    args = (model, mesh, shape, strategy, figures, layers_per_stage, n_devices, label, cap)
    args += (definition,)
    if definition != FitDefinition.EVERYTHING:
        return _plan_at(*args, rows=0)
    # Under EVERYTHING a device also holds one microbatch's activations, and the microbatch
    # depends on the plan (M >= stages): plan for a microbatch of `rows` sequences, starting
    # from 1, until the plan's own microbatch is no larger than the one it was planned for.
    # Replanning for a smaller microbatch could pack more layers a stage and so need a larger
    # one: the plan returned is the one whose reservation covers its own microbatch.
    rows = 1
    for _ in range(8):
        plan = _plan_at(*args, rows=rows)
        planned = microbatch_rows(shape, plan.data_parallel, plan.n_stages)
        if planned <= rows:
            return plan
        rows = planned
    raise PlanError(
        f"no plan of {model.name} reserves enough for its own microbatch (last: {rows} rows); "
        "give more --microbatches or a smaller --batch"
    )


def microbatch_rows(shape: RunShape, data_parallel: int, n_stages: int) -> int:
    """Sequences in one microbatch: at ``shape.microbatches``, else at the default count
    (M >= stages)."""
    per_replica = max(shape.batch // data_parallel, 1)
    m = shape.microbatches or microbatch_count(n_stages, per_replica)
    return max(per_replica // m, 1)


def _plan_at(
    model, mesh, shape, strategy, figures, layers_per_stage, n_devices, label, cap, definition, rows
) -> Plan:
    """The plan when a device also holds a microbatch of ``rows`` sequences' activations (and
    the embedding, head and buffers) besides its layers: under EVERYTHING that overhead comes
    off the capacity the partitioner fills."""
    L = model.n_layers
    splits = [t for t in valid_splits(model) if t <= n_devices]

    def overhead(split: int) -> int:
        if definition != FitDefinition.EVERYTHING:
            return 0
        return device_overhead(model, mesh, shape, split, rows)

    stages, split, layer_bytes = None, 1, []
    for split in splits:
        layer_bytes = [layer_fit_bytes(model, shape, definition, split)] * L
        n_stages = min(L, n_devices // split)
        room = cap - overhead(split)
        stages = _partition(strategy, layer_bytes, room, n_stages, layers_per_stage, L)
        if stages is not None:
            break
    if stages is None:
        raise _no_fit_error(
            model, shape, definition, label, cap, strategy, layers_per_stage, splits
        )

    notes = [f"fit definition: {FIT_DEFINITIONS[definition]}"]
    if definition == FitDefinition.EVERYTHING:
        notes.append(
            f"each device also holds up to {format_bytes(overhead(split))} besides its layers: "
            f"the embedding and head, a microbatch of up to {rows} sequence(s)' activations, "
            "buffers"
        )
    if split > 1:
        one = layer_fit_bytes(model, shape, definition, 1)
        notes.append(
            f"one layer needs {format_bytes(one)}, more than "
            f"{label} ({format_bytes(cap)}): heads and MLP are split {split} ways per stage"
        )
    needed = len(stages) * split
    if needed > n_devices:
        raise PlanError(
            f"the {strategy} plan needs {len(stages)} stages x {split} devices = {needed} devices "
            f"at capacity {label} ({format_bytes(cap)}), but the mesh has {n_devices}"
            + ("; use a larger --capacity (e.g. hbm) or more devices" if label != "hbm" else "")
            + (
                f"; more --microbatches shrink the {rows} sequences whose activations each "
                "device holds beside its layers"
                if definition == FitDefinition.EVERYTHING and rows > 1
                else ""
            )
        )
    data_parallel = 1
    if needed < n_devices:
        if n_devices % needed == 0:
            data_parallel = n_devices // needed
            notes.append(
                f"{strategy} needs {needed} of {n_devices} devices: the pipeline is replicated "
                f"{data_parallel}x for data parallelism"
            )
        elif strategy == Strategy.GREEDY and n_devices // split <= L:
            n_stages = n_devices // split
            stages = plan_balanced(layer_bytes, n_stages)
            notes.append(
                f"greedy needs {needed} of {n_devices} devices, which does not divide them: "
                f"fell back to balanced over {n_stages} stages"
            )
        else:
            notes.append(f"{n_devices - needed} of {n_devices} devices stay unused")

    plan = assemble_plan(
        model,
        mesh,
        shape,
        stages,
        split,
        data_parallel,
        strategy,
        figures,
        definition,
        label,
        cap,
        layer_bytes,
        notes,
        overhead=overhead(split),
    )
    hbm = mesh.tiers["hbm"].capacity_bytes
    for i, stage in enumerate(plan.stages):
        if figures == "derived" and stage.bytes_by_tier["hbm"] > hbm:
            raise PlanError(
                f"stage {i} (layers {stage.layers[0]}-{stage.layers[-1]}) fits {label} but "
                f"needs {format_bytes(stage.bytes_by_tier['hbm'])} of HBM with its KV cache, "
                f"more than {format_bytes(hbm)}; use fewer layers per stage"
            )
    return plan


def with_replicas(plan: Plan, replicas: int, why: str) -> Plan:
    """``plan`` with ``replicas`` copies of its pipeline (the first ones' devices), and a note
    saying ``why``."""
    per_replica = plan.n_stages * plan.split
    stages = tuple(
        replace(
            stage,
            devices=tuple(
                r * per_replica + s * plan.split + k
                for r in range(replicas)
                for k in range(plan.split)
            ),
        )
        for s, stage in enumerate(plan.stages)
    )
    return replace(plan, data_parallel=replicas, stages=stages, notes=(*plan.notes, why))


def assemble_plan(
    model: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    stages: Sequence[Sequence[int]],
    split: int,
    data_parallel: int,
    strategy: Strategy | Method,
    figures: str,
    definition: FitDefinition,
    label: str,
    cap: int,
    layer_bytes: Sequence[int],
    notes: Sequence[str],
    overhead: int = 0,
) -> Plan:
    """Stages of layer ids -> a Plan: device ids, bytes per device and the tier each fits.
    ``overhead``: what each device holds besides its layers (``device_overhead``), counted in
    the bytes under EVERYTHING."""
    per_replica = len(stages) * split
    plan_stages = []
    for s, layers in enumerate(stages):
        tier, by_tier = _smallest_tier(model, mesh, shape, figures, split, len(layers), overhead)
        devs = tuple(
            r * per_replica + s * split + k for r in range(data_parallel) for k in range(split)
        )
        plan_stages.append(
            Stage(
                layers=tuple(layers),
                devices=devs,
                split=split,
                bytes=sum(layer_bytes[i] for i in layers)
                + (overhead if definition == FitDefinition.EVERYTHING else 0),
                tier=tier,
                bytes_by_tier=by_tier,
            )
        )
    return Plan(
        model=model.name,
        mesh=mesh.name,
        strategy=strategy,
        figures=figures,
        fit_definition=definition,
        capacity=label,
        capacity_bytes=cap,
        layer_bytes=tuple(layer_bytes),
        split=split,
        data_parallel=data_parallel,
        stages=tuple(plan_stages),
        notes=tuple(notes),
    )


def _no_fit_error(
    model, shape, definition, label, cap, strategy, layers_per_stage, splits
) -> PlanError:
    one = layer_fit_bytes(model, shape, definition, 1)
    if strategy == Strategy.MANUAL:
        heaviest = max(layers_per_stage)
        return PlanError(
            f"--layers-per-stage: a stage of {heaviest} layers needs "
            f"{format_bytes(heaviest * one)} but capacity {label} is {format_bytes(cap)}, "
            f"even split {splits[-1]} ways"
        )
    # fit(t) = fixed + shardable / t: the fixed part (replicated activations, buffers) never splits.
    half = layer_fit_bytes(model, shape, definition, 2) if model.n_heads % 2 == 0 else None
    shardable = 2 * (one - half) if half is not None else one
    fixed = one - shardable
    fitting = [
        t for t in valid_splits(model) if layer_fit_bytes(model, shape, definition, t) <= cap
    ]
    head = f"layer 0 needs {format_bytes(one)} but capacity {label} is {format_bytes(cap)}"
    advice = "Use --capacity hbm or a smaller model" if label != "hbm" else "Use a smaller model"
    if fitting:
        t = fitting[0]
        return PlanError(
            f"{head}; a {t}-way split fits, so {model.n_layers} layers would take "
            f"{model.n_layers * t} devices but only {splits[-1]}-way splits fit this mesh. "
            + advice
        )
    if fixed >= cap:
        return PlanError(
            f"{head}, and its part that no split divides ({format_bytes(fixed)}: replicated "
            "activations and buffers) alone exceeds it: no number of devices fits. " + advice
        )
    per_layer = math.ceil(shardable / (cap - fixed))
    return PlanError(
        f"{head}; no split of its {model.n_heads} heads and {model.d_ff} MLP width fits; it would "
        f"take a {per_layer}-way split, {model.n_layers * per_layer} devices for "
        f"{model.n_layers} layers. " + advice
    )
