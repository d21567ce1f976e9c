"""Partitioners over contiguous layers and the Plan they produce.

- ``plan_greedy``: the seed's method; open a new partition when the next layer would overflow C.
  For contiguous partitions this gives the fewest partitions possible.
- ``plan_balanced``: a fixed number of stages, minimising the largest (optimal).
- ``plan_manual``: an explicit list of layers per stage, validated.

``make_plan`` turns a model, a mesh and a capacity into a ``Plan``: stages of layers, the devices
each stage spans (its tensor-split degree), the bytes it needs and the smallest tier it fits.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from jaxpart.config import (
    TIER_NAMES,
    ConfigError,
    MeshConfig,
    ModelConfig,
    format_bytes,
    parse_size,
)
from jaxpart.memory import (
    FIT_DEFINITIONS,
    STATED,
    TIER_DEFINITION,
    layer_fit_bytes,
    valid_splits,
)

STRATEGIES = ("greedy", "balanced", "manual")


class PlanError(ConfigError):
    """A plan that cannot be made; the message carries the numbers."""


class LayerTooLarge(PlanError):
    def __init__(self, layer: int, nbytes: int, capacity: int):
        self.layer, self.nbytes, self.capacity = layer, nbytes, capacity
        super().__init__(
            f"layer {layer} needs {format_bytes(nbytes)} "
            f"but the capacity is {format_bytes(capacity)}"
        )


# ---------------------------------------------------------------------------------------------
# Partitioners over a list of per-layer byte counts.


def _prefix_sums(layer_bytes: Sequence[int]) -> list[int]:
    return [0, *itertools.accumulate(layer_bytes)]


def _greedy_cuts(
    prefix: list[int], capacity: int, max_stages: int | None = None
) -> list[int] | None:
    """Stage end indices of the greedy fill; None if a layer exceeds capacity or stages run out."""
    n_layers, start, ends = len(prefix) - 1, 0, []
    while start < n_layers:
        # The furthest end such that layers [start, end) sum to at most capacity.
        end = bisect.bisect_right(prefix, prefix[start] + capacity, lo=start + 1) - 1
        if end == start:
            return None
        ends.append(end)
        if max_stages is not None and len(ends) > max_stages:
            return None
        start = end
    return ends


def _stages_from_ends(ends: list[int]) -> list[list[int]]:
    starts = [0, *ends[:-1]]
    return [list(range(a, b)) for a, b in zip(starts, ends, strict=True)]


def _check_layers(layer_bytes: Sequence[int]) -> None:
    if not layer_bytes:
        raise PlanError("layer_bytes is empty: a model needs at least one layer")
    for i, b in enumerate(layer_bytes):
        if b < 0:
            raise PlanError(f"layer {i} has {b} bytes: must be >= 0")


def plan_greedy(layer_bytes: Sequence[int], capacity: int) -> list[list[int]]:
    """The seed's greedy aggregation: fewest contiguous partitions that each fit ``capacity``."""
    _check_layers(layer_bytes)
    for i, b in enumerate(layer_bytes):
        if b > capacity:
            raise LayerTooLarge(i, b, capacity)
    ends = _greedy_cuts(_prefix_sums(layer_bytes), capacity)
    assert ends is not None  # every layer fits, so the fill always advances
    return _stages_from_ends(ends)


def plan_balanced(layer_bytes: Sequence[int], n_stages: int) -> list[list[int]]:
    """Exactly ``n_stages`` contiguous, non-empty stages minimising the largest stage's bytes.

    Binary search on the bottleneck with the greedy fill as the feasibility probe. The optimum lies
    in [max(largest layer, ceil(total / n)), that + largest layer]: at the upper end every stage
    the fill closes holds more than total / n, so the fill needs at most n stages.
    """
    _check_layers(layer_bytes)
    if not 1 <= n_stages <= len(layer_bytes):
        raise PlanError(
            f"stages = {n_stages}: must be between 1 and the number of layers "
            f"({len(layer_bytes)}); "
            "more stages than layers would leave a stage empty"
        )
    prefix = _prefix_sums(layer_bytes)
    largest = max(layer_bytes)
    lo = max(largest, -(-prefix[-1] // n_stages))
    hi = lo + largest
    while lo < hi:
        mid = (lo + hi) // 2
        if _greedy_cuts(prefix, mid, n_stages) is not None:
            hi = mid
        else:
            lo = mid + 1
    return _stages_from_ends(_even_cuts(prefix, lo, n_stages))


def _even_cuts(prefix: list[int], capacity: int, n_stages: int) -> list[int]:
    """Exactly n_stages cuts under ``capacity``, each stage as close as it can be to an even share.

    ``need[p]``, the fewest stages for layers p.. (greedy from p), falls as p grows, so the ends
    that leave a packable rest form a range; pick the end nearest the even share of what is left.
    """
    n_layers = len(prefix) - 1
    need = [0] * (n_layers + 1)
    for p in range(n_layers - 1, -1, -1):
        need[p] = 1 + need[bisect.bisect_right(prefix, prefix[p] + capacity, lo=p + 1) - 1]
    ends, start = [], 0
    for left in range(n_stages, 1, -1):
        furthest = bisect.bisect_right(prefix, prefix[start] + capacity, lo=start + 1) - 1
        hi = min(furthest, n_layers - left + 1)
        # The first end whose rest fits in left - 1 stages (need[] is non-increasing).
        lo_end = max(start + 1, _first_at_most(need, left - 1, start + 1, hi))
        target = prefix[start] + (prefix[-1] - prefix[start]) / left
        e = min(max(bisect.bisect_left(prefix, target, lo=lo_end, hi=hi), lo_end), hi)
        if e > lo_end and target - prefix[e - 1] <= prefix[e] - target:
            e -= 1
        ends.append(e)
        start = e
    ends.append(n_layers)
    return ends


def _first_at_most(values: list[int], bound: int, lo: int, hi: int) -> int:
    """The first index in [lo, hi] with values[i] <= bound, for non-increasing ``values``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= bound:
            hi = mid
        else:
            lo = mid + 1
    return lo


def plan_manual(layers_per_stage: Sequence[int], n_layers: int) -> list[list[int]]:
    """Explicit stage sizes, e.g. [3, 5, 4, 4]: they must be positive and cover every layer."""
    for i, n in enumerate(layers_per_stage):
        if n <= 0:
            raise PlanError(f"--layers-per-stage: stage {i} has {n} layers: must be >= 1")
    total = sum(layers_per_stage)
    if total != n_layers:
        raise PlanError(
            f"--layers-per-stage = {','.join(map(str, layers_per_stage))}: sums to {total}, "
            f"but the model has {n_layers} layers"
        )
    ends = list(itertools.accumulate(layers_per_stage))
    return _stages_from_ends(ends)


def bottleneck(stages: Sequence[Sequence[int]], layer_bytes: Sequence[int]) -> int:
    return max(sum(layer_bytes[i] for i in stage) for stage in stages)


# ---------------------------------------------------------------------------------------------
# The Plan.


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
    strategy: str
    figures: str  # derived | stated
    fit_definition: str  # resident | everything | stated
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
        d = {k: v for k, v in d.items() if k not in ("devices", "fit_definition_text")}
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
        return cls(
            **{**d, "layer_bytes": tuple(d["layer_bytes"]), "notes": tuple(d["notes"])},
            stages=stages,
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def resolve_capacity(capacity: str | None, mesh: MeshConfig) -> tuple[str, int, str]:
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


def _stage_bytes(model: ModelConfig, definition: str, split: int, n_layers: int) -> int:
    return n_layers * layer_fit_bytes(model, definition, split)


def _smallest_tier(model: ModelConfig, mesh: MeshConfig, figures: str, split: int, n: int):
    by_tier = {
        tier: _stage_bytes(
            model, STATED if figures == "stated" else TIER_DEFINITION[tier], split, n
        )
        for tier in TIER_NAMES
    }
    for tier in TIER_NAMES:
        if by_tier[tier] <= mesh.tiers[tier].capacity_bytes:
            return tier, by_tier
    return "none", by_tier


def _partition(strategy, layer_bytes, capacity, n_stages, layers_per_stage, n_layers):
    """Stages for one split degree, or None when they do not fit the capacity."""
    if strategy == "greedy":
        if max(layer_bytes) > capacity:
            return None
        return plan_greedy(layer_bytes, capacity)
    if strategy == "manual":
        stages = plan_manual(layers_per_stage, n_layers)
    else:
        stages = plan_balanced(layer_bytes, n_stages)
    return stages if bottleneck(stages, layer_bytes) <= capacity else None


def make_plan(
    model: ModelConfig,
    mesh: MeshConfig,
    capacity: str | None = None,
    strategy: str = "greedy",
    devices: int | None = None,
    figures: str = "derived",
    layers_per_stage: Sequence[int] | None = None,
) -> Plan:
    """Plan ``model`` onto ``devices`` under ``capacity`` (both default to the mesh's)."""
    if strategy not in STRATEGIES:
        raise PlanError(f"--strategy = {strategy!r}: use one of {list(STRATEGIES)}")
    if figures not in ("derived", "stated"):
        raise PlanError(f"--figures = {figures!r}: use 'derived' or 'stated'")
    if (strategy == "manual") != (layers_per_stage is not None):
        raise PlanError(
            "--layers-per-stage: give it with --strategy manual, and only then"
            f" (strategy = {strategy!r})"
        )
    n_devices = mesh.n_devices if devices is None else devices
    if n_devices < 1:
        raise PlanError(f"--devices = {n_devices}: must be >= 1")
    label, cap, definition = resolve_capacity(capacity, mesh)
    if figures == "stated":
        definition = STATED
    L = model.n_layers
    splits = [t for t in valid_splits(model) if t <= n_devices]

    stages, split, layer_bytes = None, 1, []
    for split in splits:
        layer_bytes = [layer_fit_bytes(model, definition, split)] * L
        n_stages = min(L, n_devices // split)
        stages = _partition(strategy, layer_bytes, cap, n_stages, layers_per_stage, L)
        if stages is not None:
            break
    if stages is None:
        raise _no_fit_error(model, definition, label, cap, strategy, layers_per_stage, splits)

    notes = [f"fit definition: {FIT_DEFINITIONS[definition]}"]
    if split > 1:
        notes.append(
            f"one layer needs {format_bytes(layer_fit_bytes(model, definition, 1))}, more than "
            f"{label} ({format_bytes(cap)}): heads and MLP are split {split} ways per stage"
        )
    needed = len(stages) * split
    if needed > n_devices:
        raise PlanError(
            f"the {strategy} plan needs {len(stages)} stages x {split} devices = {needed} devices "
            f"at capacity {label} ({format_bytes(cap)}), but the mesh has {n_devices}; "
            "use a larger --capacity (e.g. hbm) or more devices"
        )
    data_parallel = 1
    if needed < n_devices:
        if n_devices % needed == 0:
            data_parallel = n_devices // needed
            notes.append(
                f"{strategy} needs {needed} of {n_devices} devices: the pipeline is replicated "
                f"{data_parallel}x for data parallelism"
            )
        elif strategy == "greedy" and n_devices // split <= L:
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


def assemble_plan(
    model: ModelConfig,
    mesh: MeshConfig,
    stages: Sequence[Sequence[int]],
    split: int,
    data_parallel: int,
    strategy: str,
    figures: str,
    definition: str,
    label: str,
    cap: int,
    layer_bytes: Sequence[int],
    notes: Sequence[str],
) -> Plan:
    """Stages of layer ids -> a Plan: device ids, bytes per device and the tier each fits."""
    per_replica = len(stages) * split
    plan_stages = []
    for s, layers in enumerate(stages):
        tier, by_tier = _smallest_tier(model, mesh, figures, split, len(layers))
        devs = tuple(
            r * per_replica + s * split + k for r in range(data_parallel) for k in range(split)
        )
        plan_stages.append(
            Stage(
                layers=tuple(layers),
                devices=devs,
                split=split,
                bytes=sum(layer_bytes[i] for i in layers),
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


def _no_fit_error(model, definition, label, cap, strategy, layers_per_stage, splits) -> PlanError:
    one = layer_fit_bytes(model, definition, 1)
    if strategy == "manual":
        heaviest = max(layers_per_stage)
        return PlanError(
            f"--layers-per-stage: a stage of {heaviest} layers needs "
            f"{format_bytes(heaviest * one)} but capacity {label} is {format_bytes(cap)}, "
            f"even split {splits[-1]} ways"
        )
    # fit(t) = fixed + shardable / t: the fixed part (replicated activations, buffers) never splits.
    shardable = 2 * (one - layer_fit_bytes(model, definition, 2)) if model.n_heads % 2 == 0 else one
    fixed = one - shardable
    fitting = [t for t in valid_splits(model) if layer_fit_bytes(model, definition, t) <= cap]
    head = f"layer 0 needs {format_bytes(one)} but capacity {label} is {format_bytes(cap)}"
    if fitting:
        t = fitting[0]
        return PlanError(
            f"{head}; a {t}-way split fits, so {model.n_layers} layers would take "
            f"{model.n_layers * t} devices but only {splits[-1]}-way splits fit this mesh. "
            "Use --capacity hbm or a smaller model"
        )
    if fixed >= cap:
        return PlanError(
            f"{head}, and its part that no split divides ({format_bytes(fixed)}: replicated "
            "activations and buffers) alone exceeds it: no number of devices fits. "
            "Use --capacity hbm or a smaller model"
        )
    per_layer = math.ceil(shardable / (cap - fixed))
    return PlanError(
        f"{head}; no split of its {model.n_heads} heads and {model.d_ff} MLP width fits; it would "
        f"take a {per_layer}-way split, {model.n_layers * per_layer} devices for "
        f"{model.n_layers} layers. Use --capacity hbm or a smaller model"
    )
