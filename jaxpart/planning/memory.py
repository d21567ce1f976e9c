"""The memory model: bytes of weights, KV cache, activations and buffers, from the dims.

``layer_memory`` gives one layer's figures; ``device_memory`` what one device holds for a plan
and a run shape (its layers, the embedding and head, one microbatch's activations for the
attention path in use, buffers). The planner, ``verify`` and the performance model all use
these, and the KV cache's size is ``kv_bytes`` alone.

What must fit a capacity depends on the tier (see ``FIT_DEFINITIONS``): HBM holds everything a
device owns; an on-chip tier (smem, l2) only pays off for the *resident set*, what every
microbatch and every decode step re-reads, because the KV cache and prompt activations stream
from HBM once per step anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxpart.config import (
    Backend,
    ConfigError,
    FitDefinition,
    MeshConfig,
    ModelConfig,
    RunShape,
    format_bytes,
)
from jaxpart.config.quant import scale_bytes

FIT_DEFINITIONS = {
    FitDefinition.RESIDENT: "resident set: weights + decode working activations (smem / l2)",
    FitDefinition.EVERYTHING: "everything a device holds: weights + KV cache per layer, and once "
    "per device the embedding and head, one microbatch's activations and buffers (hbm)",
    FitDefinition.STATED: "the seed's definition: stated weights + full-prefill activations "
    "+ buffers",
}
TIER_DEFINITION = {
    "smem": FitDefinition.RESIDENT,
    "l2": FitDefinition.RESIDENT,
    "hbm": FitDefinition.EVERYTHING,
}

# The KV cache is stored in pages of PAGE positions, read KV_BLOCK positions (a power of 2) at a
# time by the decode kernels; see jaxpart.model.kernels.attention.
PAGE = 16
KV_BLOCK = 128
# Working-set bounds the executors keep (jaxpart.model.layers, jaxpart.model.kernels.attention):
# a long prompt's MLP runs ROW_CHUNK rows at a time; the XLA prefill attention QUERY_CHUNK
# queries at a time (its f32 scores are rows x heads x QUERY_CHUNK x prompt).
ROW_CHUNK = 4096
QUERY_CHUNK = 512
# Hidden-state-sized f32 buffers a prefill layer holds at once (rows x prompt x d_model x 4 bytes
# each): a projection's f32 output and the f32 sum it feeds (the all-reduce's, under a tensor
# split). Read from XLA's buffer assignment of the compiled prefill (jaxpart verify).
PREFILL_F32_HIDDEN = 2


def cache_positions(seq_len: int) -> int:
    """Positions the KV cache allocates for a context of ``seq_len``: whole KV blocks, and a
    multiple of 4 blocks past 16, so that a decode kernel can split the context evenly over
    parallel programs (10000 -> 10240, 2.4% more; 64 -> 64). Positions past ``seq_len`` are
    never read: the kernels stop at each row's length."""
    if seq_len <= KV_BLOCK:
        return max(PAGE, 1 << (seq_len - 1).bit_length())
    blocks = -(-seq_len // KV_BLOCK)
    if blocks > 16:
        blocks = -(-blocks // 4) * 4
    return blocks * KV_BLOCK


@dataclass(frozen=True)
class LayerMemory:
    """Bytes one decoder layer needs, on one device, when its heads and MLP are split t ways."""

    split: int
    params: int  # weight-matrix params of the whole layer (norm scales, 2 x d, are left out)
    weight_bytes: int  # its matrices' share on this device and their FP8 scales
    prefill_activation_bytes: int  # B x S x d: one whole prefill's hidden states (the seed's)
    decode_hidden_bytes: int  # B x d: what crosses a stage boundary per decode step
    decode_working_bytes: int  # B x (d + q, k, v, attention out and MLP hidden per device)
    kv_cache_bytes: int  # K and V of B rows at the allocated positions (see kv_bytes)
    buffer_bytes: int

    def fit_bytes(self, definition: FitDefinition) -> int:
        """Bytes this layer adds to a device under ``definition``. For EVERYTHING the rest of
        what a device holds (embedding and head, a microbatch's activations, buffers) is paid
        once per device, not per layer: see ``device_overhead``."""
        if definition == FitDefinition.RESIDENT:
            return self.weight_bytes + self.decode_working_bytes
        if definition == FitDefinition.EVERYTHING:
            return self.weight_bytes + self.kv_cache_bytes
        raise ValueError(f"{definition=} is not a derived-figures definition")


def valid_splits(model: ModelConfig) -> list[int]:
    """Tensor-split degrees that divide the query heads and the MLP width, and either divide the
    K/V heads or are a multiple of them, smallest first."""
    return [t for t in range(1, model.n_heads + 1) if _split_problem(model, t) is None]


def _split_problem(model: ModelConfig, t: int) -> str | None:
    if model.n_heads % t or model.d_ff % t:
        return f"must divide n_heads = {model.n_heads} and d_ff = {model.d_ff}"
    if model.n_kv_heads % t and t % model.n_kv_heads:
        return f"must divide n_kv_heads = {model.n_kv_heads} or be a multiple of it"
    return None


def kv_heads_per_device(model: ModelConfig, split: int) -> int:
    """K/V heads a tensor rank holds: its share when ``split`` divides them; otherwise the one
    head its query heads share, copied on each rank that needs it (as Megatron and MaxText)."""
    return max(1, model.n_kv_heads // split)


def layer_memory(model: ModelConfig, shape: RunShape, split: int = 1) -> LayerMemory:
    """The memory of one layer of ``model`` from its dims, per device at tensor split ``split``,
    for a run of ``shape.batch`` sequences whose KV caches hold the model's whole context."""
    return _layer_memory(model, shape.batch, split)


def _layer_memory(model: ModelConfig, b: int, split: int) -> LayerMemory:
    problem = _split_problem(model, split)
    if problem:
        raise ConfigError(f"split = {split}: {problem}")
    s, d, f, nbytes = model.seq_len, model.d_model, model.d_ff, model.dtype_bytes
    wbytes = model.weight_bytes_each
    q, kv = model.q_width, model.kv_width
    kv_local = kv_heads_per_device(model, split) * model.head_dim
    params = 2 * d * q + 2 * d * kv + model.mlp_matrices * d * f
    local = (2 * d * q + model.mlp_matrices * d * f) // split + 2 * d * kv_local
    hidden = (model.mlp_matrices - 1) * f  # gelu: h; swiglu: gate and up
    return LayerMemory(
        split=split,
        params=params,
        weight_bytes=local * wbytes + scale_bytes(model, split),
        prefill_activation_bytes=b * s * d * nbytes,
        decode_hidden_bytes=b * d * nbytes,
        decode_working_bytes=b * (d + (2 * q + hidden) // split + 2 * kv_local) * nbytes,
        kv_cache_bytes=kv_bytes(model, b, cache_positions(s), split),
        buffer_bytes=model.buffer_bytes,
    )


def norm_bytes(model: ModelConfig) -> int:
    """One layer's norm scales, on every rank whole: two (four with Gemma 2's sandwich norms),
    and Qwen3's per-head q and k norms, in the dtype the norms are stored in."""
    norms = (4 if model.sandwich_norms else 2) * model.d_model
    if model.qk_norm:
        norms += 2 * model.head_dim
    return norms * model.embed_bytes_each


def layer_params(model: ModelConfig) -> int:
    """Weight-matrix params of one whole layer (norm scales left out)."""
    return _layer_memory(model, 1, 1).params


def layer_weight_bytes(model: ModelConfig, split: int = 1) -> int:
    """Bytes of one layer's weights on one device at tensor split ``split``."""
    return _layer_memory(model, 1, split).weight_bytes


def kv_bytes(model: ModelConfig, rows: int, positions: int, split: int = 1) -> int:
    """K and V of one layer for ``rows`` sequences at ``positions`` each, per device."""
    heads = kv_heads_per_device(model, split)
    return 2 * rows * positions * heads * model.head_dim * model.kv_bytes_each


def stated_fit_bytes(model: ModelConfig, split: int = 1) -> int:
    """The seed's per-layer total (weights + activations + buffers), weights split t ways."""
    if model.stated is None:
        raise ConfigError(
            f"--figures = 'stated': model {model.name!r} has no [stated] figures "
            "(only models/dense16.toml carries the seed's)"
        )
    st = model.stated
    return st.weight_bytes // split + st.activation_bytes + st.buffer_bytes


def layer_fit_bytes(
    model: ModelConfig, shape: RunShape, definition: FitDefinition, split: int = 1
) -> int:
    """Bytes one layer must fit into under ``definition``; every layer of a dense model is alike."""
    if definition == FitDefinition.STATED:
        return stated_fit_bytes(model, split)
    return layer_memory(model, shape, split).fit_bytes(definition)


def embedding_params(model: ModelConfig) -> int:
    """Token embedding + LM head (one matrix when tied), outside the layers; every device of
    a pipeline holds both (see ``device_memory``)."""
    return (1 if model.tie_embeddings else 2) * model.vocab * model.d_model


@dataclass(frozen=True)
class DeviceMemory:
    """What one device holds for a stage of ``layers`` layers at tensor split ``split``: the
    layers' weights and KV cache, the embedding and head (every device holds both: the stage
    loop is the same program on every device), the larger of a prefill's and a decode step's
    working activations for one microbatch, and the model file's buffers."""

    layers: int
    split: int
    weights: int
    kv_cache: int
    embedding_and_head: int
    prefill_activations: int
    decode_activations: int
    buffers: int
    cpu_widening: int  # XLA's CPU backend only: f32 copies it makes of bf16 matrices

    @property
    def activations(self) -> int:
        return max(self.prefill_activations, self.decode_activations)

    @property
    def overhead(self) -> int:
        """What the device holds besides its layers' weights and KV cache."""
        return self.embedding_and_head + self.activations + self.buffers + self.cpu_widening

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def parts(self) -> dict[str, int]:
        out = {
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "embedding_and_head": self.embedding_and_head,
            "activations": self.activations,
            "buffers": self.buffers,
        }
        if self.cpu_widening:
            out["cpu_widening"] = self.cpu_widening
        return out


def prefill_activation_bytes(
    model: ModelConfig, rows: int, prompt_len: int, split: int, attention: Backend
) -> int:
    """One microbatch of ``rows`` x ``prompt_len`` through a prefill layer, per device: the
    stage's hidden states in the model dtype, PREFILL_F32_HIDDEN f32 hidden-state buffers,
    the layer's q, k and v, a ROW_CHUNK of the MLP's f32 hidden, the attention's working set
    (``attention="xla"``: f32 scores for QUERY_CHUNK queries against the prompt; ``"pallas"``:
    none, the flash kernel keeps its tiles on chip) and the last position's f32 logits."""
    d, nbytes, tokens = model.d_model, model.dtype_bytes, rows * prompt_len
    kv_local = kv_heads_per_device(model, split) * model.head_dim
    hidden = tokens * d * nbytes + PREFILL_F32_HIDDEN * tokens * d * 4
    qkv = tokens * (model.q_width // split + 2 * kv_local) * nbytes
    mlp = min(tokens, ROW_CHUNK) * (model.mlp_matrices - 1) * model.d_ff // split * 4
    scores = 0
    if attention == Backend.XLA:
        heads = model.n_heads // split
        scores = rows * heads * min(prompt_len, QUERY_CHUNK) * prompt_len * 4
    return hidden + qkv + mlp + scores + rows * model.vocab * 4


def decode_activation_bytes(model: ModelConfig, rows: int, split: int) -> int:
    """One decode step of a microbatch of ``rows``, per device: the layer's working set in f32
    (``decode_working_bytes``, widened) and the f32 logits."""
    mem = _layer_memory(model, rows, split)
    return mem.decode_working_bytes * 4 // model.dtype_bytes + rows * model.vocab * 4


def cpu_widening_bytes(model: ModelConfig, split: int) -> int:
    """The f32 copies XLA's CPU backend makes when it multiplies bf16 or f16 matrices (it
    computes them in f32): the embedding, and one layer's MLP matrices. A GPU program makes
    none; ``verify`` adds them only to set the model beside a CPU compile. FP8 matrices are
    widened the same way (the CPU has no FP8 GEMM), from e4m3 to f32."""
    if model.dtype_bytes != 2 or model.weight_bytes_each not in (1, 2):
        return 0
    one_layer_mlp = model.mlp_matrices * model.d_model * model.d_ff // split
    return (model.vocab * model.d_model + one_layer_mlp) * 4


def device_memory(
    model: ModelConfig,
    layers: int,
    split: int,
    *,
    cache_rows: int,
    rows: int,
    prompt_len: int,
    attention: Backend = Backend.PALLAS,
    platform: str = "gpu",
) -> DeviceMemory:
    """Bytes one device holds: ``layers`` layers split ``split`` ways, KV caches for
    ``cache_rows`` sequences at the model's context (``cache_positions(seq_len)``), and the
    activations of one microbatch of ``rows`` sequences with a ``prompt_len`` prompt, for
    the attention path in use (``"pallas"`` or ``"xla"``). ``platform="cpu"`` adds the f32
    copies XLA's CPU backend makes (``cpu_widening_bytes``)."""
    mem = _layer_memory(model, 1, split)
    return DeviceMemory(
        layers=layers,
        split=split,
        weights=layers * (mem.weight_bytes + norm_bytes(model)),
        kv_cache=layers * kv_bytes(model, cache_rows, cache_positions(model.seq_len), split),
        embedding_and_head=(embedding_params(model) + model.d_model) * model.embed_bytes_each,
        prefill_activations=prefill_activation_bytes(model, rows, prompt_len, split, attention),
        decode_activations=decode_activation_bytes(model, rows, split),
        buffers=model.buffer_bytes,
        cpu_widening=cpu_widening_bytes(model, split) if platform == "cpu" else 0,
    )


def discrepancies(model: ModelConfig, shape: RunShape) -> list[str]:
    """Where the model file's stated figures disagree with what its dims give at ``shape``."""
    if model.stated is None:
        return []
    mem, st = layer_memory(model, shape), model.stated
    dims_total = mem.params * model.n_layers
    out = [
        f"params: the dims give {mem.params:,} per layer ({dims_total / 1e9:.2f}B in "
        f"{model.n_layers} layers, {format_bytes(mem.weight_bytes)} per layer); the seed states "
        f"{st.total_params / 1e9:.0f}B ({format_bytes(st.weight_bytes)} per layer), "
        f"{st.total_params / dims_total:.1f}x more",
        f"activations: the seed's {format_bytes(st.activation_bytes)} per layer is one whole "
        f"prefill's hidden states (B x S x d = {format_bytes(mem.prefill_activation_bytes)}); "
        f"a decode step moves {format_bytes(mem.decode_hidden_bytes)} between layers",
        f"KV cache: {format_bytes(mem.kv_cache_bytes)} per layer, which the seed leaves out",
    ]
    return out


def check_pod(model: ModelConfig, mesh: MeshConfig, shape: RunShape, devices: int | None = None):
    """The floor every placement shares: the weights once and the KV caches of the whole batch
    must fit the HBM of all ``devices`` together. Every planner, the plan search, ``simulate``
    and ``verify`` call it first, so a run too large for the pod is refused by each of them with
    this one reason (the largest batch that passes is named)."""
    n = mesh.n_devices if devices is None else devices
    hbm = n * mesh.tiers["hbm"].capacity_bytes
    positions = cache_positions(model.seq_len)
    per_sequence = model.n_layers * kv_bytes(model, 1, positions)
    weights = (
        model.n_layers * layer_weight_bytes(model)
        + embedding_params(model) * model.embed_bytes_each
    )
    if weights + shape.batch * per_sequence <= hbm:
        return
    most = max(0, (hbm - weights) // per_sequence)
    raise ConfigError(
        f"--batch = {shape.batch}: the KV cache of {shape.batch} sequences at {positions:,} "
        f"positions is {format_bytes(shape.batch * per_sequence)} and the weights "
        f"{format_bytes(weights)} (memory model), more than the {format_bytes(hbm)} of HBM of "
        f"{n} {mesh.device_kind} ({mesh.name}); at most {most} sequences fit"
    )
