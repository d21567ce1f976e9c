"""Per-layer memory model: bytes of weights, activations, KV cache and buffers, from the dims.

What must fit a capacity depends on the tier (see ``FIT_DEFINITIONS``): HBM holds everything a
stage owns; an on-chip tier (smem, l2) only pays off for the *resident set*, what every microbatch
and every decode step re-reads, because the KV cache and prompt activations stream from HBM once
per step anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxpart.config import ConfigError, ModelConfig, format_bytes

RESIDENT, EVERYTHING, STATED = "resident", "everything", "stated"
FIT_DEFINITIONS = {
    RESIDENT: "resident set: weights + decode working activations (smem / l2)",
    EVERYTHING: "everything a stage holds: weights + KV cache + prefill activations + buffers "
    "(hbm)",
    STATED: "the seed's definition: stated weights + full-prefill activations + buffers",
}
TIER_DEFINITION = {"smem": RESIDENT, "l2": RESIDENT, "hbm": EVERYTHING}

# The KV cache is stored in pages of PAGE positions, read KV_BLOCK positions (a power of 2) at a
# time by the decode kernels; see jaxpart.kernels.attention.
PAGE = 16
KV_BLOCK = 128


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
    weight_bytes: int
    prefill_activation_bytes: int  # B x S x d: one whole prefill's hidden states
    decode_hidden_bytes: int  # B x d: what crosses a stage boundary per decode step
    decode_working_bytes: int  # B x (d + q, k, v, attention out and MLP hidden per device)
    kv_cache_bytes: int  # 2 x B x S x (K/V heads per device) x head_dim
    buffer_bytes: int

    def fit_bytes(self, definition: str) -> int:
        if definition == RESIDENT:
            return self.weight_bytes + self.decode_working_bytes
        if definition == EVERYTHING:
            return (
                self.weight_bytes
                + self.kv_cache_bytes
                + self.prefill_activation_bytes
                + self.buffer_bytes
            )
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


def layer_memory(model: ModelConfig, split: int = 1) -> LayerMemory:
    """The memory of one layer of ``model`` from its dims, per device at tensor split ``split``."""
    problem = _split_problem(model, split)
    if problem:
        raise ConfigError(f"split = {split}: {problem}")
    b, s, d, f, nbytes = model.batch, model.seq_len, model.d_model, model.d_ff, model.dtype_bytes
    wbytes, kvbytes = model.weight_bytes_each, model.kv_bytes_each
    q, kv = model.q_width, model.kv_width
    kv_local = kv_heads_per_device(model, split) * model.head_dim
    params = 2 * d * q + 2 * d * kv + model.mlp_matrices * d * f
    local = (2 * d * q + model.mlp_matrices * d * f) // split + 2 * d * kv_local
    hidden = (model.mlp_matrices - 1) * f  # gelu: h; swiglu: gate and up
    return LayerMemory(
        split=split,
        params=params,
        weight_bytes=local * wbytes,
        prefill_activation_bytes=b * s * d * nbytes,
        decode_hidden_bytes=b * d * nbytes,
        decode_working_bytes=b * (d + (2 * q + hidden) // split + 2 * kv_local) * nbytes,
        kv_cache_bytes=2 * b * s * kv_local * kvbytes,
        buffer_bytes=model.buffer_bytes,
    )


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


def layer_fit_bytes(model: ModelConfig, definition: str, split: int = 1) -> int:
    """Bytes one layer must fit into under ``definition``; every layer of a dense model is alike."""
    if definition == STATED:
        return stated_fit_bytes(model, split)
    return layer_memory(model, split).fit_bytes(definition)


def embedding_params(model: ModelConfig) -> int:
    """Token embedding + LM head (one matrix when tied); held by the first and last stage,
    outside the layers."""
    return (1 if model.tie_embeddings else 2) * model.vocab * model.d_model


def discrepancies(model: ModelConfig) -> list[str]:
    """Where the model file's stated figures disagree with what its dims give."""
    if model.stated is None:
        return []
    mem, st = layer_memory(model), model.stated
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
