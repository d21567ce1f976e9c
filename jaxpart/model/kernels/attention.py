"""Causal attention that reads only the positions that are filled: decode over the KV cache,
prefill over the prompt's own keys, each with a Pallas path (JAX's own GPU kernels), a
length-aware XLA path, and a pure-jnp reference beside them.

The KV cache of a stack of layers is ``[H_kv, n_layers, batch, S, head_dim]`` (heads first), and
``S`` is ``memory.cache_positions(seq_len)``: whole pages of ``PAGE`` positions.

- **Decode, Pallas**: JAX's split-K flash decoding, ``pallas.ops.gpu.paged_attention``, which is
  grouped-KV (query heads share K/V heads). It takes the *whole* cache as its page pool
  ``[H_kv, pages, PAGE, head_dim]`` (a free reshape of the heads-first layout) and a block table
  naming the pages of each row of this layer, and it stops at each row's length. So a step reads
  only the filled positions and copies nothing. ``decode_attention.gqa`` is the same algorithm,
  but it takes one layer's rows as their own ``[b, S, H, K]`` array and transposes them: inside a
  stage's layer loop that is a copy of the layer's whole cache window per step, which is what
  this module exists to avoid.
- **Decode, XLA**: an online softmax over blocks of positions (``KV_BLOCK``, or ``XLA_CPU_BLOCK``
  on CPU) with a dynamic trip count (up to the longest row's length), each block a
  ``dynamic_slice`` of the cache.
- **Prefill** (a prompt that starts at position 0; it attends only to its own T positions):
  JAX's Pallas flash attention (``pallas.ops.gpu.attention.mha``, causal) or XLA, a chunk of
  ``QUERY_CHUNK`` queries at a time so that the f32 scores stay bounded.

``auto`` is Pallas on GPU and XLA elsewhere. cuDNN's fused attention
(``jax.nn.dot_product_attention(implementation="cudnn")``) is not used: it can only be lowered
where a GPU with cuDNN is present, and ``verify`` must lower for CUDA on any machine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpart.model.kernels.backend import (
    AUTO,
    KernelChoice,
    cpu_barrier,
    fallback,
    resolve,
    target_platform,
)
from jaxpart.model.quant import kv_load, kv_store
from jaxpart.planning.memory import KV_BLOCK, PAGE, QUERY_CHUNK

# Positions the XLA decode reads a pass on CPU: a short pass wastes less of the last, partly
# filled block, and a loop iteration costs little there (scripts/bench_seq_len.py: dense16-tiny's
# step at 16-32 filled positions is 1.66x slower with a 1024-position cache read 128 at a time,
# 1.07x read 32 at a time). Elsewhere, KV_BLOCK.
XLA_CPU_BLOCK = 32
MAX_SPLITS = 16  # parallel partitions of the context in a decode kernel
_NEG = -1e30  # a finite "minus infinity" for running maxima (exp of a difference stays 0, not NaN)


def _f32_dot(spec: str, a, b):
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def decode_splits(n_blocks: int) -> int:
    """Partitions of the context for a decode kernel: the largest divisor <= MAX_SPLITS."""
    return max(k for k in range(1, min(n_blocks, MAX_SPLITS) + 1) if n_blocks % k == 0)


def _check_cache(q, k_cache):
    b, hq, kdim = q.shape
    hkv, _, _, s, kdim_cache = k_cache.shape
    if kdim != kdim_cache or hq % hkv:
        raise ValueError(
            f"q {q.shape} and cache {k_cache.shape}: head_dim must match and the {hq} query "
            f"heads must be a multiple of the {hkv} K/V heads"
        )
    if s % PAGE:
        raise ValueError(f"cache positions {s} must be a multiple of the page size {PAGE}")


# -- references (pure jnp, f32 softmax over the whole window under a mask) --------------------


def decode_attention_reference(
    q,
    k_new,
    v_new,
    k_cache,
    v_cache,
    layer,
    row,
    pos,
    lengths=None,
    window=0,
    softcap=0.0,
    k_scale=None,
    v_scale=None,
):
    """``decode_attention`` in plain jnp: write, then softmax(q k^T / sqrt(K)) v over positions
    < ``lengths`` (and, with a sliding ``window``, >= lengths - window) of the whole cache
    under a mask (it reads every position: for tests only)."""
    k_cache = _write(k_cache, k_new, layer, row, pos, scale=k_scale)
    v_cache = _write(v_cache, v_new, layer, row, pos, scale=v_scale)
    hkv, _, _, s, kdim = k_cache.shape
    b, hq, _ = q.shape
    lengths = pos + 1 if lengths is None else lengths
    lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (b,))
    rows = (hkv, 1, b, s, kdim)
    keys = jax.lax.dynamic_slice(k_cache, (0, layer, row, 0, 0), rows)[:, 0]
    values = jax.lax.dynamic_slice(v_cache, (0, layer, row, 0, 0), rows)[:, 0]
    keys, values = kv_load(keys, k_scale, jnp.float32), kv_load(values, v_scale, jnp.float32)
    qg = q.reshape(b, hkv, hq // hkv, kdim).astype(jnp.float32)
    scores = _cap(_f32_dot("bhgk,hbsk->bhgs", qg, keys) * kdim**-0.5, softcap)
    visible = _visible(jnp.arange(s)[None, :], jnp.asarray(lengths)[:, None], window)
    scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1)
    out = _f32_dot("bhgs,hbsk->bhgk", probs, values)
    return out.reshape(b, hq, kdim).astype(q.dtype), k_cache, v_cache


def _cap(scores, softcap: float):
    """Gemma 2's soft-capped scores, cap * tanh(s / cap), before the mask; s where cap is 0."""
    return softcap * jnp.tanh(scores / softcap) if softcap else scores


def _masked(backend, window, span: int, softcap: float, kernel: KernelChoice):
    """(the backend, the window) for attention over ``span`` positions: a static window no
    shorter than the span is full attention, exactly (0); the Pallas kernels mask only by length
    and causally, so any other window, or soft-capped scores, run XLA (one warning a reason)."""
    if isinstance(window, int) and window >= span:
        window = 0
    if backend == "pallas" and not (isinstance(window, int) and window == 0):
        words = f"a sliding window of {window}" if isinstance(window, int) else "per-layer windows"
        backend = fallback("attention", words, kernel.strict)
    if backend == "pallas" and softcap:
        backend = fallback("attention", "soft-capped scores", kernel.strict)
    return backend, window


def _visible(positions, lengths, window):
    """Key positions a query sees: below its length, and with a sliding ``window`` (0: none;
    an int, or traced where it depends on the layer) the last ``window`` of them, its own
    included (transformers: kv_idx > q_idx - window)."""
    seen = positions < lengths
    if isinstance(window, int):
        return seen & (positions >= lengths - window) if window else seen
    return jnp.where(window > 0, seen & (positions >= lengths - window), seen)


def prefill_attention_reference(q, k, v, window=0, softcap=0.0):
    """Causal softmax(q k^T / sqrt(K)) v over one prompt, ``q [b, T, Hq, K]``, ``k/v [b, T, Hkv,
    K]`` (positions 0..T-1), f32 throughout; a sliding ``window`` (0: none) of keys a query."""
    b, t, hq, kdim = q.shape
    group = hq // k.shape[2]
    k, v = (jnp.repeat(a, group, axis=2).astype(jnp.float32) for a in (k, v))
    scores = _cap(_f32_dot("bthk,bshk->bhts", q.astype(jnp.float32), k) * kdim**-0.5, softcap)
    causal = _visible(jnp.arange(t)[None, :], jnp.arange(t)[:, None] + 1, window)
    probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    return _f32_dot("bhts,bshk->bthk", probs, v).astype(q.dtype)


# -- decode -------------------------------------------------------------------------------------


def _write(cache, new, layer, row, pos, kernel: KernelChoice = AUTO, scale=None):
    """``new [H, b, K]`` into the cache at position ``pos`` (one for all rows, or ``[b]``) of
    rows row..row+b of ``layer``; an FP8 cache's divided by its per-head ``scale [H]``."""
    new = kv_store(new, scale, cache.dtype)
    if jnp.ndim(pos) == 0:
        return jax.lax.dynamic_update_slice(cache, new[:, None, :, None], (0, layer, row, pos, 0))
    if target_platform(kernel) != "cpu":  # one scatter kernel, in place
        rows = row + jnp.arange(new.shape[1])
        return cache.at[:, layer, rows, pos, :].set(new)

    # XLA's CPU backend widens a bf16 scatter to f32 (a copy of the whole cache each way): a
    # row at a time instead, each an in-place update.
    def one(j, cache):
        return jax.lax.dynamic_update_slice(
            cache, new[:, j][:, None, None, None], (0, layer, row + j, pos[j], 0)
        )

    return jax.lax.fori_loop(0, new.shape[1], one, cache)


def _decode_xla(
    q,
    k_new,
    v_new,
    k_cache,
    v_cache,
    layer,
    row,
    pos,
    lengths,
    block,
    kernel,
    window=0,
    softcap=0.0,
    k_scale=None,
    v_scale=None,
):
    hkv, _, _, s, kdim = k_cache.shape
    b, hq, _ = q.shape
    block = min(block, s)
    if s % block:
        raise ValueError(f"cache positions {s} must be a multiple of the KV block {block}")
    qg = q.reshape(b, hkv, hq // hkv, kdim)
    scale = kdim**-0.5

    def body(j, carry):
        out, top, total, k_cache, v_cache = carry
        # The new position is written inside the loop (the same write every pass): a loop that
        # only read the caches would see them as loop invariants, and XLA's CPU backend, which
        # computes bf16 in f32, would convert both whole caches before the loop.
        k_cache = _write(k_cache, k_new, layer, row, pos, kernel, k_scale)
        v_cache = _write(v_cache, v_new, layer, row, pos, kernel, v_scale)
        start = j * block
        shape = (hkv, 1, b, block, kdim)
        keys = jax.lax.dynamic_slice(k_cache, (0, layer, row, start, 0), shape)[:, 0]
        values = jax.lax.dynamic_slice(v_cache, (0, layer, row, start, 0), shape)[:, 0]
        keys, values = cpu_barrier((keys, values), kernel)
        if keys.dtype != q.dtype:  # an 8-bit cache: widened (and scaled) a block at a time
            keys, values = kv_load(keys, k_scale, q.dtype), kv_load(values, v_scale, q.dtype)
        scores = _cap(_f32_dot("bhgk,hbsk->bhgs", qg, keys) * scale, softcap)
        visible = _visible((start + jnp.arange(block))[None, :], lengths[:, None], window)
        scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
        new_top = jnp.maximum(top, scores.max(axis=-1))
        weights = jnp.exp(scores - new_top[..., None])
        correction = jnp.exp(top - new_top)
        total = total * correction + weights.sum(axis=-1)
        out = out * correction[..., None] + _f32_dot(
            "bhgs,hbsk->bhgk", weights.astype(values.dtype), values
        )
        return out, new_top, total, k_cache, v_cache

    init = (
        jnp.zeros(qg.shape, jnp.float32),
        jnp.full(qg.shape[:-1], _NEG, jnp.float32),
        jnp.zeros(qg.shape[:-1], jnp.float32),
        k_cache,
        v_cache,
    )
    n_blocks = jnp.maximum((jnp.max(lengths) + block - 1) // block, 1)  # a dynamic trip count
    # With a sliding window, only the blocks that hold a row's last ``window`` positions.
    if isinstance(window, int):
        first = jnp.maximum(jnp.min(lengths) - window, 0) // block if window else 0
    else:  # a layer's own window, traced
        first = jnp.where(window > 0, jnp.maximum(jnp.min(lengths) - window, 0) // block, 0)
    out, _, total, k_cache, v_cache = jax.lax.fori_loop(first, n_blocks, body, init)
    return (out / total[..., None]).reshape(b, hq, kdim).astype(q.dtype), k_cache, v_cache


GPU_WRITE = KernelChoice(platform="gpu")  # the paged kernel runs on GPU (or interprets it)


def _decode_paged(q, k_new, v_new, k_cache, v_cache, layer, row, pos, lengths, interpret):
    from jax.experimental.pallas.ops.gpu.paged_attention import paged_attention

    k_cache = _write(k_cache, k_new, layer, row, pos, GPU_WRITE)
    v_cache = _write(v_cache, v_new, layer, row, pos, GPU_WRITE)
    hkv, n, batch, s, kdim = k_cache.shape
    b = q.shape[0]
    pages = s // PAGE
    per_block = min(KV_BLOCK // PAGE, pages)
    # The cache as the kernel's page pool: row r of layer l owns pages (l*B + r)*pages + p.
    k_pages = k_cache.reshape(hkv, n * batch * pages, PAGE, kdim)
    v_pages = v_cache.reshape(hkv, n * batch * pages, PAGE, kdim)
    first = (layer * batch + row + jnp.arange(b, dtype=jnp.int32)) * pages
    tables = first[:, None] + jnp.arange(pages, dtype=jnp.int32)[None, :]
    # The kernel does not scale the scores: scale q instead.
    out = paged_attention(
        (q * kdim**-0.5).astype(q.dtype),
        k_pages,
        v_pages,
        tables,
        lengths.astype(jnp.int32),
        pages_per_compute_block=per_block,
        k_splits=decode_splits(pages // per_block),
        interpret=interpret,
    )
    return out, k_cache, v_cache


def decode_attention(
    q,
    k_new,
    v_new,
    k_cache,
    v_cache,
    layer,
    row,
    pos,
    lengths=None,
    kernel: KernelChoice = AUTO,
    window: int = 0,
    softcap: float = 0.0,
    k_scale=None,
    v_scale=None,
):
    """One decode step's attention: write the new keys and values ``k_new, v_new [H_kv, b, K]``
    at position ``pos`` of cache rows row..row+b of ``layer`` (caches ``[H_kv, n, B, S, K]``),
    then attend ``q [b, Hq, K]`` over positions < ``lengths [b]`` (default: pos + 1), and with
    a sliding ``window`` (0: none) over the last ``window`` of them only. An FP8 cache stores
    K and V divided by their per-head ``k_scale``, ``v_scale`` ``[H_kv]`` and multiplies them
    back as it reads.

    Reads only the filled positions (of the window), whatever ``S`` is. The Pallas kernel has no
    window: a window shorter than the cache runs the XLA path. Returns (out, k_cache, v_cache).
    """
    _check_cache(q, k_cache)
    b = q.shape[0]
    lengths = pos + 1 if lengths is None else lengths
    lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (b,))
    backend, interpret = resolve("attention", kernel.attention, kernel)
    if backend == "pallas" and jnp.dtype(k_cache.dtype).itemsize == 1:
        backend = fallback("attention", "an FP8 (e4m3) KV cache", kernel.strict)
    backend, window = _masked(backend, window, k_cache.shape[3], softcap, kernel)
    args = (q, k_new, v_new, k_cache, v_cache, layer, row, pos, lengths)
    if backend == "pallas":
        return _decode_paged(*args, interpret)
    block = XLA_CPU_BLOCK if target_platform(kernel) == "cpu" else KV_BLOCK
    return _decode_xla(*args, block, kernel, window, softcap, k_scale, v_scale)


# -- prefill ------------------------------------------------------------------------------------


def _prefill_xla(q, k, v, window=0, softcap=0.0):
    b, t, hq, kdim = q.shape
    group = hq // k.shape[2]
    if group > 1:
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)

    def block(q, positions):
        scores = _cap(_f32_dot("bthk,bshk->bhts", q, k) * kdim**-0.5, softcap)
        visible = _visible(jnp.arange(t)[None, :], positions[:, None] + 1, window)
        scores = jnp.where(visible[None, None], scores, -jnp.inf)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return _f32_dot("bhts,bshk->bthk", probs, v).astype(q.dtype)

    positions = jnp.arange(t)
    if t <= QUERY_CHUNK:
        return block(q, positions)
    # Each query's softmax is independent, so chunks change nothing but memory: the f32 scores
    # of a whole prompt, b x H x T x T, would be the largest buffer of a full-size model.
    n = -(-t // QUERY_CHUNK)
    pad = n * QUERY_CHUNK - t  # padded queries see position 0 onwards; their rows are dropped
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    positions = jnp.pad(positions, (0, pad))
    chunks = q.reshape(b, n, QUERY_CHUNK, hq, kdim).swapaxes(0, 1)
    out = jax.lax.map(lambda c: block(c[0], c[1]), (chunks, positions.reshape(n, QUERY_CHUNK)))
    return out.swapaxes(0, 1).reshape(q.shape)[:, :t]


def prefill_block(t: int) -> int:
    """Query and key tile of the Pallas prefill: a power of 2 from 16 to 128."""
    return min(128, max(16, 1 << (t - 1).bit_length()))


def _prefill_pallas(q, k, v, interpret):
    from jax.experimental.pallas.ops.gpu import attention as flash

    b, t, hq, kdim = q.shape
    group = hq // k.shape[2]
    if group > 1:  # the flash kernel wants as many K/V heads as query heads
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    tile = prefill_block(t)
    # Whole tiles only (interpret mode fills a partial block with NaN). Padded keys come after
    # every real query, so causality hides them; padded queries are dropped.
    pad = -t % tile
    if pad:
        q, k, v = (jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))) for a in (q, k, v))
    out = flash.mha(
        q,
        k,
        v,
        None,
        sm_scale=kdim**-0.5,
        causal=True,
        block_sizes=flash.BlockSizes(block_q=tile, block_k=tile),
        interpret=interpret,
    )
    return out[:, :t]


def prefill_attention(q, k, v, kernel: KernelChoice = AUTO, window: int = 0, softcap: float = 0.0):
    """Causal attention of a prompt that starts at position 0 over its own keys:
    ``q [b, T, Hq, K]``, ``k/v [b, T, Hkv, K]`` -> ``[b, T, Hq, K]``; with a sliding ``window``
    (0: none) each query sees its last ``window`` keys, its own included. The Pallas kernel has
    no window: a window shorter than the prompt runs the XLA path."""
    if q.shape[-1] != k.shape[-1] or q.shape[2] % k.shape[2]:
        raise ValueError(f"q {q.shape} and k {k.shape}: head_dim must match, heads divide")
    backend, interpret = resolve("attention", kernel.attention, kernel)
    backend, window = _masked(backend, window, q.shape[1], softcap, kernel)
    if backend == "pallas":
        return _prefill_pallas(q, k, v, interpret)
    return _prefill_xla(q, k, v, window, softcap)
