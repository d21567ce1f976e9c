"""Partitioners over contiguous layers, on a list of per-layer byte counts.

- ``plan_greedy``: the seed's method; open a new partition when the next layer would overflow C.
  For contiguous partitions this gives the fewest partitions possible.
- ``plan_balanced``: a fixed number of stages, minimising the largest (optimal).
- ``plan_manual``: an explicit list of layers per stage, validated.

``jaxpart.planning.plan`` turns their stages into a Plan for a model and a mesh.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from jaxpart.config import ConfigError, Strategy, format_bytes

STRATEGIES = tuple(Strategy)


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
