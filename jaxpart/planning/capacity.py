"""How many sequences a plan can hold: the KV cache room of each pipeline stage, and the layer
split that gives the tightest stage the most room. No jax.

At high load an engine's batch is set by its KV cache: a replica runs as many sequences as its
fullest stage has room for. A stage's device holds its layers' weights (split over the tensor
ranks), the embedding (first stage) and the LM head (last stage) where the engine keeps them
there (every device holds both in jaxpart's own executors), one prefill's working activations
and the model file's buffers; what the engine lets it use beyond that is its KV pool
(``Memory``: a share of the device, or of what the weights leave). Each sequence takes its
context's K and V in every layer of the stage: the run's context where the engine pages its KV
cache (a windowed layer's window, at most), the model's maximum context where it allocates it
whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from jaxpart.config import Backend, ConfigError, MeshConfig, ModelConfig, RunShape
from jaxpart.planning.memory import (
    cache_positions,
    kv_bytes,
    layer_weight_bytes,
    prefill_activation_bytes,
)


@dataclass(frozen=True)
class Memory:
    """How an engine uses a device's memory (an engine profile's fields; ``perf.engines``)."""

    memory_fraction: float = 1.0  # share of the device weights, activations and KV may use
    kv_free_fraction: float = 1.0  # share of what is left after them the KV pool takes
    edge_stages: bool = False  # embedding on the first stage only, LM head on the last only
    head_split: bool = False  # embedding and head split over the tensor ranks (vocab parallel)
    paged_kv: bool = False  # KV for the run's context (pages), not the model's whole context


@dataclass(frozen=True)
class StageRoom:
    layers: int
    fixed_bytes: int  # per device: weights, embedding / head, activations, buffers
    kv_bytes_per_sequence: int  # per device, every layer of the stage
    sequences: int  # per replica: what its KV pool holds

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Capacity:
    """The sequences a plan's replicas hold at a run's context, stage by stage."""

    stages: tuple[StageRoom, ...]
    replicas: int
    positions: int  # the context each sequence's KV holds

    @property
    def per_replica(self) -> int:
        return min(s.sequences for s in self.stages)

    @property
    def batch(self) -> int:
        """The largest batch whose KV fits: the tightest stage's room, over every replica."""
        return self.per_replica * self.replicas

    def in_rounds(self, stages: int) -> int:
        """The most sequences a replica holds in whole rounds of ``stages`` microbatches (all
        it holds when that is fewer than the stages)."""
        n = self.per_replica
        return n - n % stages if n >= stages else n

    @property
    def limiting_stage(self) -> int:
        return min(range(len(self.stages)), key=lambda i: self.stages[i].sequences)

    def to_dict(self) -> dict:
        return {
            "max_batch": self.batch,
            "per_replica": self.per_replica,
            "replicas": self.replicas,
            "positions": self.positions,
            "limiting_stage": self.limiting_stage,
            "stages": [s.to_dict() for s in self.stages],
        }


def _edge_bytes(model: ModelConfig, split: int, memory: Memory) -> tuple[int, int, int]:
    """(first stage's, middle stages', last stage's) embedding and head bytes per device."""
    matrix = model.vocab * model.d_model * model.embed_bytes_each
    if memory.head_split:
        matrix //= split
    if not memory.edge_stages:  # every device holds both (one copy when tied)
        both = matrix * (1 if model.tie_embeddings else 2)
        return both, both, both
    return matrix, 0, matrix


def stage_rooms(
    model: ModelConfig,
    mesh: MeshConfig,
    layers_per_stage: list[int],
    split: int,
    shape: RunShape,
    memory: Memory,
) -> list[StageRoom]:
    """Each stage's room, per replica, for sequences of ``shape``'s context."""
    hbm = mesh.tiers["hbm"].capacity_bytes
    positions = shape.context if memory.paged_kv else cache_positions(model.seq_len)
    # per layer: a paged cache holds a windowed layer's window only
    windows = model.layer_windows or (model.sliding_window,) * model.n_layers
    layer_kv = [
        kv_bytes(model, 1, min(positions, w) if w and memory.paged_kv else positions, split)
        for w in windows
    ]
    weights = layer_weight_bytes(model, split)
    activations = prefill_activation_bytes(
        model, 1, shape.prompt_len, split, Backend.auto_on(mesh.platform)
    )
    first, middle, last = _edge_bytes(model, split, memory)
    out, first = [], 0
    for i, n in enumerate(layers_per_stage):
        edge = first if i == 0 else last if i == len(layers_per_stage) - 1 else middle
        if len(layers_per_stage) == 1:
            edge = first + last if memory.edge_stages else first
        fixed = n * weights + edge + activations + model.buffer_bytes
        pool = (hbm * memory.memory_fraction - fixed) * memory.kv_free_fraction
        per_sequence = sum(layer_kv[first : first + n])
        first += n
        sequences = max(0, int(pool // per_sequence)) if per_sequence else 0
        out.append(StageRoom(n, fixed, per_sequence, sequences))
    return out


def capacity(
    model: ModelConfig,
    mesh: MeshConfig,
    layers_per_stage: list[int],
    split: int,
    replicas: int,
    shape: RunShape,
    memory: Memory,
) -> Capacity:
    """The largest batch a plan of these stages holds at ``shape``'s context."""
    rooms = stage_rooms(model, mesh, layers_per_stage, split, shape, memory)
    positions = shape.context if memory.paged_kv else cache_positions(model.seq_len)
    return Capacity(tuple(rooms), replicas, positions)


def plan_capacity(
    model: ModelConfig, mesh: MeshConfig, plan, shape: RunShape, memory: Memory
) -> Capacity:
    """``capacity`` of a ``Plan``'s stages and replicas."""
    return capacity(
        model, mesh, plan.layers_per_stage, plan.split, plan.data_parallel, shape, memory
    )


def even_split(n_layers: int, stages: int) -> list[int]:
    """Layers per stage as equal as they can be, the larger stages first."""
    if not 1 <= stages <= n_layers:
        raise ConfigError(f"--pp = {stages}: must be between 1 and the {n_layers} layers")
    base, extra = divmod(n_layers, stages)
    return [base + (1 if i < extra else 0) for i in range(stages)]


def balanced_split(
    model: ModelConfig,
    mesh: MeshConfig,
    stages: int,
    split: int,
    shape: RunShape,
    memory: Memory,
) -> list[int]:
    """The layers per stage that give the tightest stage the most KV room: the largest
    per-replica batch B for which every stage can hold enough layers (a stage holds n layers
    and B sequences when its fixed bytes and n x B sequences' KV fit its pool), found by
    bisection on B; then layers are taken off the stages with the least room until they sum to
    the model's. Edge stages, which also hold the embedding or the head, get fewer layers."""
    n_layers = model.n_layers
    even = even_split(n_layers, stages)
    if stages == 1:
        return even

    def most_layers(batch: int) -> list[int]:
        # the most layers each stage can hold with ``batch`` sequences (at least one)
        out = []
        for i in range(stages):
            lo, hi = 1, n_layers - stages + 1
            while lo < hi:  # largest n whose room holds ``batch``
                mid = (lo + hi + 1) // 2
                trial = [1] * stages
                trial[i] = mid
                room = stage_rooms(model, mesh, trial, split, shape, memory)[i]
                lo, hi = (mid, hi) if room.sequences >= batch else (lo, mid - 1)
            out.append(lo)
        return out

    best = min(s.sequences for s in stage_rooms(model, mesh, even, split, shape, memory))
    lo, hi = best, max(best, 1)
    while sum(most_layers(hi)) >= n_layers:  # grow the bracket
        lo, hi = hi, hi * 2
        if hi > 1 << 40:
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sum(most_layers(mid)) >= n_layers else (lo, mid)
    counts = most_layers(lo)
    if sum(counts) < n_layers:  # not even the even split's batch: keep the even split
        return even
    while sum(counts) > n_layers:  # take a layer off the stage with the least room
        rooms = stage_rooms(model, mesh, counts, split, shape, memory)
        spare = [i for i in range(stages) if counts[i] > 1]
        counts[min(spare, key=lambda i: (rooms[i].sequences, -counts[i]))] -= 1
    return counts
