"""The decoder's maths as functions of arrays: RMSNorm, rotary causal attention with a KV cache,
the MLP (through ``jaxpart.kernels``), a decoder layer, a stack of layers, and the whole forward.

No Flax here: the executors call these inside ``shard_map`` and ``scripts/bench_gpu.py`` imports
them where only jax and numpy are installed. ``tensor_axis`` names the mesh axis a stage's heads
and MLP are split over (one psum after attention, one after the MLP).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpart.kernels.mlp import XLA_KERNEL as XLA
from jaxpart.kernels.mlp import KernelChoice, fused_mlp

ROPE_THETA = 10_000.0
NORM_EPS = 1e-6
QUERY_CHUNK = 512  # queries attended at once in a long prefill (see _attend)


def jnp_dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def empty_cache(n_layers, batch, seq_len, n_heads, head_dim, dtype):
    shape = (n_layers, batch, seq_len, n_heads, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


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


def attention(p, x, k_cache, v_cache, pos, tensor_axis=None, layer=0, row=0):
    """Causal attention of ``x [b, T, d]`` at positions pos..pos+T.

    The caches are the whole stack ``[n, B, S, H, K]``; x is layer ``layer``'s input for cache
    rows row..row+b. Only the new keys and values are written, in place, and only this layer's
    rows are read: a step never copies a layer's whole cache. Returns (out, k_cache, v_cache).
    """
    dtype = x.dtype
    b, t = x.shape[:2]
    positions = pos + jnp.arange(t)
    q = rope(_dot("btd,dhk->bthk", x, p["wq"]).astype(dtype), positions)
    k = rope(_dot("btd,dhk->bthk", x, p["wk"]).astype(dtype), positions)
    v = _dot("btd,dhk->bthk", x, p["wv"]).astype(dtype)
    at = (layer, row, pos, 0, 0)
    k_cache = jax.lax.dynamic_update_slice(k_cache, k[None].astype(k_cache.dtype), at)
    v_cache = jax.lax.dynamic_update_slice(v_cache, v[None].astype(v_cache.dtype), at)
    window = (1, b, *k_cache.shape[2:])
    keys = jax.lax.dynamic_slice(k_cache, (layer, row, 0, 0, 0), window)[0]
    values = jax.lax.dynamic_slice(v_cache, (layer, row, 0, 0, 0), window)[0]
    o = _attend(q, keys, values, positions)
    out = _reduce(_dot("bthk,hkd->btd", o, p["wo"]), tensor_axis)
    return out.astype(dtype), k_cache, v_cache


def _attend(q, keys, values, positions):
    """softmax(q k^T / sqrt(K), causal) v for ``q [b, T, H, K]`` over ``keys [b, S, H, K]``.

    A long prompt is taken QUERY_CHUNK queries at a time (each row's softmax is independent, so
    this changes nothing but memory): the f32 scores of a whole prefill, b x H x T x S, are the
    largest buffer of a full-size model (101 GB a microbatch for dense16).
    """
    t = q.shape[1]

    def block(q, positions):
        scores = _dot("bthk,bshk->bhts", q, keys) * (q.shape[-1] ** -0.5)
        visible = jnp.arange(keys.shape[1])[None, :] <= positions[:, None]  # [T, S]
        scores = jnp.where(visible[None, None], scores, -jnp.inf)
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        return _dot("bhts,bshk->bthk", probs, values).astype(q.dtype)

    if t <= QUERY_CHUNK:
        return block(q, positions)
    n = -(-t // QUERY_CHUNK)
    pad = n * QUERY_CHUNK - t  # padded queries see position 0 onwards; their rows are dropped
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    positions = jnp.pad(positions, (0, pad))
    chunks = q.reshape(q.shape[0], n, QUERY_CHUNK, *q.shape[2:]).swapaxes(0, 1)
    out = jax.lax.map(
        lambda c: block(c[0], c[1]), (chunks, positions.reshape(n, QUERY_CHUNK))
    )  # [n, b, chunk, H, K]
    return out.swapaxes(0, 1).reshape(q.shape)[:, :t]


def mlp(p, x, tensor_axis=None, kernel: KernelChoice = XLA):
    """gelu(x @ w1) @ w2 through ``kernel``; column- then row-split under ``tensor_axis``."""
    out = fused_mlp(
        x,
        p["w1"],
        p["w2"],
        backend=kernel.backend,
        interpret=kernel.interpret,
        strict=kernel.strict,
        sram_bytes=kernel.sram_bytes,
        out_dtype=jnp.float32,
    )
    return _reduce(out, tensor_axis).astype(x.dtype)


def decoder_layer(
    p, x, k_cache, v_cache, pos, tensor_axis=None, kernel: KernelChoice = XLA, layer=0, row=0
):
    """One block; the caches are the whole stack, this block's slot is ``layer`` (see attention)."""
    a, k_cache, v_cache = attention(
        p, rms_norm(x, p["ln1"]), k_cache, v_cache, pos, tensor_axis, layer, row
    )
    h = x + a
    return h + mlp(p, rms_norm(h, p["ln2"]), tensor_axis, kernel), k_cache, v_cache


def run_layers(
    layers,
    x,
    k_cache,
    v_cache,
    pos,
    tensor_axis=None,
    n_valid=None,
    kernel: KernelChoice = XLA,
    row=0,
    unroll: bool = False,
):
    """Apply a stack of layers ``[n, ...]`` in order; caches are ``[n, B, S, H, K]`` and x holds
    cache rows row..row+b. ``unroll`` lays the layers out flat (XLA's cost analysis counts a
    loop body once, so FLOP counting needs it).

    With ``n_valid`` only the first ``n_valid`` layers run (the rest are padding of a shorter
    pipeline stage and are skipped, not computed and masked).
    """

    def body(carry, xs):
        p, j = xs

        def apply(x, kc, vc):
            return decoder_layer(p, x, kc, vc, pos, tensor_axis, kernel, j, row)

        if n_valid is None:
            return apply(*carry), None
        return jax.lax.cond(j < n_valid, apply, lambda *c: c, *carry), None

    n = k_cache.shape[0]
    (x, k_cache, v_cache), _ = jax.lax.scan(
        body, (x, k_cache, v_cache), (layers, jnp.arange(n)), unroll=unroll
    )
    return x, k_cache, v_cache


def embed_tokens(params, tokens: jax.Array) -> jax.Array:
    return jnp.take(params["embed"], tokens, axis=0)


def lm_logits(params, x_last: jax.Array) -> jax.Array:
    """Logits (f32) from hidden states ``[..., d]`` (the last position's, when generating)."""
    return _dot("...d,dv->...v", rms_norm(x_last, params["final_norm"]), params["head"])


def forward(params, tokens, k_cache, v_cache, pos, kernel: KernelChoice = XLA, unroll=False):
    """All layers on one device: tokens ``[B, T]`` at pos.. -> (last logits, k_cache, v_cache)."""
    x = embed_tokens(params, tokens)
    x, k_cache, v_cache = run_layers(
        params["layers"], x, k_cache, v_cache, pos, kernel=kernel, unroll=unroll
    )
    return lm_logits(params, x[:, -1]), k_cache, v_cache


def forward_all(params, tokens):
    """Logits at every position of ``tokens [B, T]`` (training): the same layers, a fresh cache."""
    cfg_shape = params["layers"]["wk"].shape  # [L, d, H, K]
    b, t = tokens.shape
    k, v = empty_cache(cfg_shape[0], b, t, cfg_shape[2], cfg_shape[3], params["embed"].dtype)
    x, _, _ = run_layers(params["layers"], embed_tokens(params, tokens), k, v, 0)
    return lm_logits(params, x)
