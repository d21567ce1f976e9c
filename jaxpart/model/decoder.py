"""The dense decoder (Flax NNX): embedding, N blocks (RMSNorm, causal attention with rotary
positions and optionally grouped K/V heads and sliding windows, a GELU, SwiGLU or GeGLU MLP;
Gemma's norms after both blocks), final norm, LM head (or the embedding, tied), and a KV cache.

Parameters are stored per layer in the canonical ``[L, ...]`` layout and carry *logical* axis names
only (``LOGICAL_AXES``); ``jaxpart.runtime.sharding`` maps them to mesh axes. The maths is in
``jaxpart.model.layers``, as plain functions of arrays that the executors call inside ``shard_map``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxpart.config import ModelConfig
from jaxpart.config.quant import FP8_MATRICES, scale_leaves
from jaxpart.model import layers as decoder_ops
from jaxpart.model.layers import arch_of, forward, jnp_dtype
from jaxpart.model.quant import quantize_leaf

# Logical axes of every parameter and cache leaf; the rules table in sharding.py maps them.
LOGICAL_AXES = {
    "embed": ("vocab", "embed"),
    "final_norm": ("embed",),
    "head": ("embed", "vocab"),
    "layers": {
        "ln1": ("layers", "embed"),
        "wq": ("layers", "embed", "heads", "head_dim"),
        "wk": ("layers", "embed", "kv_heads", "head_dim"),
        "wv": ("layers", "embed", "kv_heads", "head_dim"),
        "wo": ("layers", "heads", "head_dim", "embed"),
        "ln2": ("layers", "embed"),
        "ln1_out": ("layers", "embed"),  # sandwich norms only (Gemma 2): after attention
        "ln2_out": ("layers", "embed"),  # and after the MLP
        "bq": ("layers", "heads", "head_dim"),  # attention_bias only
        "bk": ("layers", "kv_heads", "head_dim"),
        "bv": ("layers", "kv_heads", "head_dim"),
        "q_norm": ("layers", "head_dim"),  # qk_norm only
        "k_norm": ("layers", "head_dim"),
        "w1": ("layers", "embed", "mlp"),  # GELU: up; SwiGLU: gate
        "w3": ("layers", "embed", "mlp"),  # SwiGLU only: up
        "w2": ("layers", "mlp", "embed"),
    },
}
CACHE_AXES = ("kv_heads", "layers", "batch", "seq", "head_dim")


def _param(rngs: nnx.Rngs, shape, axes, dtype, std: float | None) -> nnx.Param:
    """std: a normal's; None: ones (a norm's scale); 0: zeros (a (1 + w) norm's scale)."""
    init = (
        nnx.initializers.ones
        if std is None
        else nnx.initializers.zeros
        if std == 0
        else nnx.initializers.normal(std)
    )
    # eager_sharding=False: the model names logical axes only; placement happens in sharding.py.
    return nnx.Param(
        nnx.with_partitioning(init, axes, eager_sharding=False)(rngs.params(), shape, dtype)
    )


class LayerStack(nnx.Module):
    """All N decoder blocks' weights, stacked on a leading ``layers`` axis."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        L, d, h, k, f = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
        hkv = cfg.n_kv_heads
        ax = LOGICAL_AXES["layers"]
        norm = 0 if cfg.norm_plus_one else None  # scales of 1 either way
        self.ln1 = _param(rngs, (L, d), ax["ln1"], dtype, norm)
        self.wq = _param(rngs, (L, d, h, k), ax["wq"], dtype, d**-0.5)
        self.wk = _param(rngs, (L, d, hkv, k), ax["wk"], dtype, d**-0.5)
        self.wv = _param(rngs, (L, d, hkv, k), ax["wv"], dtype, d**-0.5)
        self.wo = _param(rngs, (L, h, k, d), ax["wo"], dtype, (h * k) ** -0.5)
        if cfg.attention_bias:
            self.bq = _param(rngs, (L, h, k), ax["bq"], dtype, 0.1)
            self.bk = _param(rngs, (L, hkv, k), ax["bk"], dtype, 0.1)
            self.bv = _param(rngs, (L, hkv, k), ax["bv"], dtype, 0.1)
        if cfg.qk_norm:
            self.q_norm = _param(rngs, (L, k), ax["q_norm"], dtype, norm)
            self.k_norm = _param(rngs, (L, k), ax["k_norm"], dtype, norm)
        self.ln2 = _param(rngs, (L, d), ax["ln2"], dtype, norm)
        if cfg.sandwich_norms:
            self.ln1_out = _param(rngs, (L, d), ax["ln1_out"], dtype, norm)
            self.ln2_out = _param(rngs, (L, d), ax["ln2_out"], dtype, norm)
        self.w1 = _param(rngs, (L, d, f), ax["w1"], dtype, d**-0.5)
        if cfg.mlp in ("swiglu", "geglu"):
            self.w3 = _param(rngs, (L, d, f), ax["w3"], dtype, d**-0.5)
        self.w2 = _param(rngs, (L, f, d), ax["w2"], dtype, f**-0.5)


class DenseDecoder(nnx.Module):
    """The reference model on one device: ``prefill(tokens)`` then ``decode_step(token)``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype: str | None = None):
        self.cfg = cfg
        dt = jnp_dtype(dtype or cfg.dtype)  # FP8 models: made in 16 bits, then quantised
        self.embed = _param(rngs, (cfg.vocab, cfg.d_model), LOGICAL_AXES["embed"], dt, 1.0)
        self.layers = LayerStack(cfg, dt, rngs)
        norm = 0 if cfg.norm_plus_one else None
        self.final_norm = _param(rngs, (cfg.d_model,), LOGICAL_AXES["final_norm"], dt, norm)
        if not cfg.tie_embeddings:
            self.head = _param(
                rngs, (cfg.d_model, cfg.vocab), LOGICAL_AXES["head"], dt, cfg.d_model**-0.5
            )
        # Empty until prefill sizes it for the batch: a full cache for dense16 would be GBs.
        self.cache_k = nnx.Cache(jnp.zeros((0,), dt))
        self.cache_v = nnx.Cache(jnp.zeros((0,), dt))
        self.pos = nnx.Cache(jnp.zeros((), jnp.int32))

    def init_cache(self, batch: int) -> None:
        k, v = empty_cache(self.cfg, batch, self.embed[...].dtype)
        self.cache_k, self.cache_v = nnx.Cache(k), nnx.Cache(v)
        self.pos = nnx.Cache(jnp.zeros((), jnp.int32))

    def prefill(self, tokens: jax.Array) -> jax.Array:
        """Run the prompt ``tokens [B, T]``, fill the cache; return the last position's logits."""
        self.init_cache(tokens.shape[0])
        return self._step(tokens, 0)

    def decode_step(self, token: jax.Array) -> jax.Array:
        """One new token per sequence, ``token [B]``; returns logits ``[B, vocab]``."""
        return self._step(token[:, None], self.pos[...])

    def _step(self, tokens: jax.Array, pos) -> jax.Array:
        params = nnx.to_pure_dict(nnx.state(self, nnx.Param))
        k, v = self.cache_k[...], self.cache_v[...]
        logits, k, v = forward(params, tokens, k, v, pos, arch=arch_of(self.cfg))
        self.cache_k[...], self.cache_v[...] = k, v
        self.pos[...] = self.pos[...] + tokens.shape[1]
        return logits


def init_params(cfg: ModelConfig, seed: int, dtype: str | None = None) -> dict:
    """Random weights from ``seed`` as a plain dict in the canonical layout; for an FP8 model,
    its matrices quantised (``quantize_params``)."""
    model = DenseDecoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return quantize_params(params, cfg) if scale_leaves(cfg) else params


def quantize_params(params: dict, cfg: ModelConfig) -> dict:
    """16-bit (or f32) canonical weights -> ``cfg``'s FP8 ones: each matrix per output channel
    (``quant.quantize_leaf``; a block scheme's groups, a scale a group and output), its
    scales beside it, and an FP8 KV cache's scales (1: the stored values are K and V
    themselves, as vLLM does without calibrated scales)."""
    layers = dict(params["layers"])
    leaves = scale_leaves(cfg)
    if cfg.quant is not None:
        for name, inputs in FP8_MATRICES.items():
            if name not in layers:
                continue
            stack = np.asarray(layers[name], np.float32)
            shape = leaves[f"{name}_scale"][0]
            parts = [quantize_leaf(w, inputs, shape) for w in stack]
            layers[name] = np.stack([q for q, _ in parts])
            layers[f"{name}_scale"] = np.stack([sc for _, sc in parts])
            if f"{name}_in_scale" in leaves:  # static activations: a unit scale
                layers[f"{name}_in_scale"] = np.ones(cfg.n_layers, np.float32)
    for name in ("k_scale", "v_scale"):
        if name in leaves:
            layers[name] = np.ones((cfg.n_layers, cfg.n_kv_heads), np.float32)
    return {**params, "layers": layers}


def abstract_params(cfg: ModelConfig) -> dict:
    """The canonical weights as ShapeDtypeStructs in their stored dtypes (``leaf_dtype``),
    scale leaves included: nothing is made."""
    model = nnx.eval_shape(lambda: DenseDecoder(cfg, rngs=nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    def struct(name, x):
        return jax.ShapeDtypeStruct(x.shape, leaf_dtype(cfg, name))

    out = {k: struct(k, v) for k, v in shapes.items() if k != "layers"}
    out["layers"] = {k: struct(k, v) for k, v in shapes["layers"].items()}
    for name, (shape, _) in scale_leaves(cfg).items():
        out["layers"][name] = jax.ShapeDtypeStruct((cfg.n_layers, *shape), jnp.float32)
    return out


def dequantize_params(params: dict, cfg: ModelConfig) -> dict:
    """An FP8 model's canonical weights times their scales, in float32 (numpy): the 16-bit model
    that ``cfg.dequantized()`` describes, against which FP8 runs are checked."""
    layers = {}
    for name, stack in params["layers"].items():
        if "scale" in name:
            continue
        w = np.asarray(stack, np.float32)
        if name in FP8_MATRICES and f"{name}_scale" in params["layers"]:
            inputs = FP8_MATRICES[name]
            scale = np.asarray(params["layers"][f"{name}_scale"], np.float32)
            if scale.ndim == w.ndim - inputs:  # per channel: broadcast over the inputs
                scale = scale.reshape(scale.shape[0], *(1,) * inputs, *scale.shape[1:])
            else:  # blocks: each group's scale repeated over its inputs
                for axis in range(1, 1 + inputs):
                    scale = np.repeat(scale, w.shape[axis] // scale.shape[axis], axis=axis)
            w = w * scale
        layers[name] = w
    out = {k: np.asarray(v, np.float32) for k, v in params.items() if k != "layers"}
    return {**out, "layers": layers}


def leaf_dtype(cfg: ModelConfig, name: str):
    """What a canonical leaf is stored in on the devices: FP8 matrices as e4m3, scales in f32,
    everything else (norms, embedding, head, 16-bit matrices) in the activations' dtype."""
    if "scale" in name:
        return jnp.float32
    if name in FP8_MATRICES and cfg.fp8:
        return jnp.float8_e4m3fn
    return jnp_dtype(cfg.dtype)


def logical_specs(cfg: ModelConfig) -> dict:
    """Each parameter's logical PartitionSpec, read back from the NNX metadata (no weights
    made), and an FP8 model's scale leaves' (``config.quant.scale_leaves``)."""
    abstract = nnx.eval_shape(lambda: DenseDecoder(cfg, rngs=nnx.Rngs(0)))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(abstract, nnx.Param)))
    for name, (_, axes) in scale_leaves(cfg).items():
        specs["layers"][name] = P(*axes)
    return specs


def empty_cache(cfg: ModelConfig, batch: int, dtype) -> tuple[jax.Array, jax.Array]:
    return decoder_ops.empty_cache(
        cfg.n_layers, batch, cfg.seq_len, cfg.n_kv_heads, cfg.head_dim, dtype
    )
