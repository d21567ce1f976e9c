"""The dense decoder (Flax NNX): embedding, N blocks (RMSNorm, causal attention with rotary
positions, GELU MLP), final norm, LM head, and a KV cache.

Parameters are stored per layer in the canonical ``[L, ...]`` layout and carry *logical* axis names
only (``LOGICAL_AXES``); ``jaxpart.sharding`` maps them to mesh axes. The per-layer maths is plain
functions of arrays (``decoder_layer``, ``run_layers``) so that the executors can call it inside
``shard_map``, where ``tensor_axis`` names the mesh axis a stage's heads and MLP are split over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpart.config import ModelConfig

ROPE_THETA = 10_000.0
NORM_EPS = 1e-6

# Logical axes of every parameter and cache leaf; the rules table in sharding.py maps them.
LOGICAL_AXES = {
    "embed": ("vocab", "embed"),
    "final_norm": ("embed",),
    "head": ("embed", "vocab"),
    "layers": {
        "ln1": ("layers", "embed"),
        "wq": ("layers", "embed", "heads", "head_dim"),
        "wk": ("layers", "embed", "heads", "head_dim"),
        "wv": ("layers", "embed", "heads", "head_dim"),
        "wo": ("layers", "heads", "head_dim", "embed"),
        "ln2": ("layers", "embed"),
        "w1": ("layers", "embed", "mlp"),
        "w2": ("layers", "mlp", "embed"),
    },
}
CACHE_AXES = ("layers", "batch", "seq", "heads", "head_dim")


def jnp_dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def _param(rngs: nnx.Rngs, shape, axes, dtype, std: float | None) -> nnx.Param:
    init = nnx.initializers.ones if std is None else nnx.initializers.normal(std)
    # eager_sharding=False: the model names logical axes only; placement happens in sharding.py.
    return nnx.Param(
        nnx.with_partitioning(init, axes, eager_sharding=False)(rngs.params(), shape, dtype)
    )


class LayerStack(nnx.Module):
    """All N decoder blocks' weights, stacked on a leading ``layers`` axis."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        L, d, h, k, f = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
        ax = LOGICAL_AXES["layers"]
        self.ln1 = _param(rngs, (L, d), ax["ln1"], dtype, None)
        self.wq = _param(rngs, (L, d, h, k), ax["wq"], dtype, d**-0.5)
        self.wk = _param(rngs, (L, d, h, k), ax["wk"], dtype, d**-0.5)
        self.wv = _param(rngs, (L, d, h, k), ax["wv"], dtype, d**-0.5)
        self.wo = _param(rngs, (L, h, k, d), ax["wo"], dtype, (h * k) ** -0.5)
        self.ln2 = _param(rngs, (L, d), ax["ln2"], dtype, None)
        self.w1 = _param(rngs, (L, d, f), ax["w1"], dtype, d**-0.5)
        self.w2 = _param(rngs, (L, f, d), ax["w2"], dtype, f**-0.5)


class DenseDecoder(nnx.Module):
    """The reference model on one device: ``prefill(tokens)`` then ``decode_step(token)``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype: str | None = None):
        self.cfg = cfg
        dt = jnp_dtype(dtype or cfg.dtype)
        self.embed = _param(rngs, (cfg.vocab, cfg.d_model), LOGICAL_AXES["embed"], dt, 1.0)
        self.layers = LayerStack(cfg, dt, rngs)
        self.final_norm = _param(rngs, (cfg.d_model,), LOGICAL_AXES["final_norm"], dt, None)
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
        return self._step(tokens)

    def decode_step(self, token: jax.Array) -> jax.Array:
        """One new token per sequence, ``token [B]``; returns logits ``[B, vocab]``."""
        return self._step(token[:, None])

    def _step(self, tokens: jax.Array) -> jax.Array:
        params = nnx.to_pure_dict(nnx.state(self, nnx.Param))
        logits, k, v = forward(params, tokens, self.cache_k[...], self.cache_v[...], self.pos[...])
        self.cache_k[...], self.cache_v[...] = k, v
        self.pos[...] = self.pos[...] + tokens.shape[1]
        return logits


def init_params(cfg: ModelConfig, seed: int, dtype: str | None = None) -> dict:
    """Random weights from ``seed`` as a plain dict in the canonical layout."""
    model = DenseDecoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def logical_specs(cfg: ModelConfig) -> dict:
    """Each parameter's logical PartitionSpec, read back from the NNX metadata (no weights made)."""
    abstract = nnx.eval_shape(lambda: DenseDecoder(cfg, rngs=nnx.Rngs(0)))
    specs = nnx.get_partition_spec(nnx.state(abstract, nnx.Param))
    return nnx.to_pure_dict(specs)


def empty_cache(cfg: ModelConfig, batch: int, dtype) -> tuple[jax.Array, jax.Array]:
    shape = (cfg.n_layers, batch, cfg.seq_len, cfg.n_heads, cfg.head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


# ---------------------------------------------------------------------------------------------
# The maths, as functions of arrays. ``tensor_axis``: the mesh axis heads and MLP are split over.


def _dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """Matmul with f32 accumulation whatever the storage dtype."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + NORM_EPS)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary positions on ``x [B, T, H, K]`` at ``positions [T]`` (rotate-half form)."""
    half = x.shape[-1] // 2
    freq = ROPE_THETA ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions.astype(jnp.float32)[:, None] * freq[None, :]
    cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _reduce(x: jax.Array, tensor_axis: str | None) -> jax.Array:
    return x if tensor_axis is None else jax.lax.psum(x, tensor_axis)


def attention(p, x, k_cache, v_cache, pos, tensor_axis=None):
    """Causal attention of ``x [B, T, d]`` at positions pos..pos+T over a cache ``[B, S, H, K]``.

    Writes the new keys and values into the cache and returns (out, k_cache, v_cache).
    """
    dtype = x.dtype
    positions = pos + jnp.arange(x.shape[1])
    q = rope(_dot("btd,dhk->bthk", x, p["wq"]).astype(dtype), positions)
    k = rope(_dot("btd,dhk->bthk", x, p["wk"]).astype(dtype), positions)
    v = _dot("btd,dhk->bthk", x, p["wv"]).astype(dtype)
    k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, pos, 0, 0))
    v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, pos, 0, 0))
    scores = _dot("bthk,bshk->bhts", q, k_cache) * (q.shape[-1] ** -0.5)
    visible = jnp.arange(k_cache.shape[1])[None, :] <= positions[:, None]  # [T, S]
    scores = jnp.where(visible[None, None], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    o = _dot("bhts,bshk->bthk", probs, v_cache).astype(dtype)
    out = _reduce(_dot("bthk,hkd->btd", o, p["wo"]), tensor_axis)
    return out.astype(dtype), k_cache, v_cache


def mlp(p, x, tensor_axis=None):
    """gelu(x @ w1) @ w2, column- then row-split when ``tensor_axis`` is set (one psum)."""
    hidden = jax.nn.gelu(_dot("btd,df->btf", x, p["w1"])).astype(x.dtype)
    return _reduce(_dot("btf,fd->btd", hidden, p["w2"]), tensor_axis).astype(x.dtype)


def decoder_layer(p, x, k_cache, v_cache, pos, tensor_axis=None):
    a, k_cache, v_cache = attention(p, rms_norm(x, p["ln1"]), k_cache, v_cache, pos, tensor_axis)
    h = x + a
    return h + mlp(p, rms_norm(h, p["ln2"]), tensor_axis), k_cache, v_cache


def run_layers(layers, x, k_cache, v_cache, pos, tensor_axis=None, n_valid=None):
    """Apply a stack of layers ``[n, ...]`` in order; caches are ``[n, B, S, H, K]``.

    With ``n_valid`` only the first ``n_valid`` layers run (the rest are padding of a shorter
    pipeline stage and are skipped, not computed and masked).
    """

    def body(x, xs):
        p, kc, vc, j = xs
        if n_valid is None:
            x, kc, vc = decoder_layer(p, x, kc, vc, pos, tensor_axis)
        else:
            x, kc, vc = jax.lax.cond(
                j < n_valid,
                lambda x, kc, vc: decoder_layer(p, x, kc, vc, pos, tensor_axis),
                lambda x, kc, vc: (x, kc, vc),
                x,
                kc,
                vc,
            )
        return x, (kc, vc)

    n = k_cache.shape[0]
    x, (k_cache, v_cache) = jax.lax.scan(body, x, (layers, k_cache, v_cache, jnp.arange(n)))
    return x, k_cache, v_cache


def embed_tokens(params, tokens: jax.Array) -> jax.Array:
    return jnp.take(params["embed"], tokens, axis=0)


def lm_logits(params, x_last: jax.Array) -> jax.Array:
    """Logits (f32) from the last position's hidden state ``[B, d]``."""
    return _dot("bd,dv->bv", rms_norm(x_last, params["final_norm"]), params["head"])


def forward(params, tokens, k_cache, v_cache, pos):
    """All layers on one device: tokens ``[B, T]`` at pos.. -> (last logits, k_cache, v_cache)."""
    x = embed_tokens(params, tokens)
    x, k_cache, v_cache = run_layers(params["layers"], x, k_cache, v_cache, pos)
    return lm_logits(params, x[:, -1]), k_cache, v_cache
