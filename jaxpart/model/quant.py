"""FP8 arithmetic: e4m3 GEMMs with their scales, the activations quantised as the checkpoint's
format says (``config.quant.Fp8Scheme``), and the FP8 KV cache's stores and loads.

A GEMM ``x [M, C] @ w [C, N]`` with FP8 weights runs ``dot(xq, wq)`` on two e4m3 operands,
accumulating in f32 (``preferred_element_type``; XLA lowers it to an FP8 GEMM on Hopper and
runs it exactly on CPU), then multiplies by the activations' and the weights' scales:

- per-channel weight scales ``[N]``: ``y = dot(xq, wq) * sx[:, None] * sw[None, :]``, with the
  activations quantised per row (dynamically) or by the stored per-tensor ``input_scale``;
- block scales ``[C / G, N]`` (one a block of G inputs, expanded along N): the contraction runs
  a group of G at a time, each group's f32 partial product scaled by its activation group's and
  its weight block's scales, then summed;
- weight-only (no activation scales): the weights widened to the activations' dtype and scaled.

A row or group's scale is ``amax / 448`` (448: e4m3fn's largest value), the values divided by it
and rounded to e4m3. Under a tensor split each rank quantises its own share of a row-split
layer's input (o_proj, down_proj), as vLLM's FP8 layers do: no extra collective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.config.quant import FP8_MAX, Fp8Scheme

# Above this many bytes of f32 partial products, a block-scaled GEMM loops over its groups.
GROUPED_BYTES = 64 * 2**20


def to_fp8(x: jax.Array) -> jax.Array:
    """Values already divided by their scale, rounded to e4m3 (saturating: e4m3fn has no
    infinity, and a cast past 448 would give NaN)."""
    return jnp.clip(x, -FP8_MAX, FP8_MAX).astype(jnp.float8_e4m3fn)


def quantize_rows(x: jax.Array, groups: int = 1, scale_ub: float = 0.0, floor: float = 1e-12):
    """Dynamic scales: ``x [M, C]`` -> (``xq [M, C]`` e4m3, ``scale [M, groups]`` f32), one
    scale per row and group of C / groups inputs, at least ``floor``; amax capped at
    ``scale_ub`` (fbgemm)."""
    m, c = x.shape
    xg = x.astype(jnp.float32).reshape(m, groups, c // groups)
    amax = jnp.max(jnp.abs(xg), axis=-1)
    if scale_ub:
        amax = jnp.minimum(amax, scale_ub)
    scale = jnp.maximum(amax / FP8_MAX, floor)
    return to_fp8(xg / scale[..., None]).reshape(m, c), scale


def fp8_matmul(
    x: jax.Array,
    w: jax.Array,
    w_scale: jax.Array,
    scheme: Fp8Scheme,
    in_scale: jax.Array | None = None,
) -> jax.Array:
    """``x [M, C] @ (w [C, N] e4m3 x its scales)`` in f32: ``w_scale`` is ``[N]`` (per channel)
    or ``[C / G, N]`` (blocks of G inputs); ``in_scale`` the static activation scale (a scalar)
    where the scheme's activations are per tensor."""
    if scheme.activations == "none":
        return _weight_only(x, w, w_scale)
    blocks = w_scale.ndim == 2
    groups = w_scale.shape[0] if blocks else 1
    xq, sx = quantize_rows(x, groups, scheme.scale_ub, scheme.scale_floor)
    if scheme.activations == "tensor":  # a stored scale; a module without one (0): dynamic
        s = in_scale.astype(jnp.float32)
        stored = to_fp8(x.astype(jnp.float32) / jnp.where(s > 0, s, 1.0))
        xq = jnp.where(s > 0, stored, xq)
        sx = jnp.where(s > 0, jnp.broadcast_to(s, sx.shape), sx)
    if not blocks:
        y = jax.lax.dot(xq, w, preferred_element_type=jnp.float32)
        return y * sx * w_scale.astype(jnp.float32)[None, :]
    m, c = x.shape
    g = c // groups
    xg = xq.reshape(m, groups, g)
    wg = w.reshape(groups, g, w.shape[1])
    sw = w_scale.astype(jnp.float32)
    if m * groups * w.shape[1] * 4 <= GROUPED_BYTES:
        parts = jnp.einsum("mgc,gcn->mgn", xg, wg, preferred_element_type=jnp.float32)
        return jnp.sum(parts * sx[:, :, None] * sw[None], axis=1)

    def group(acc, i):
        part = jax.lax.dot(xg[:, i], wg[i], preferred_element_type=jnp.float32)
        return acc + part * sx[:, i, None] * sw[i][None, :], None

    acc, _ = jax.lax.scan(group, jnp.zeros((m, w.shape[1]), jnp.float32), jnp.arange(groups))
    return acc


def _weight_only(x, w, w_scale):
    """Weight-only FP8: the weights dequantised to x's dtype, a 16-bit GEMM."""
    if w_scale.ndim == 2:
        g = w.shape[0] // w_scale.shape[0]
        scale = jnp.repeat(w_scale.astype(jnp.float32), g, axis=0)
    else:
        scale = w_scale.astype(jnp.float32)[None, :]
    wide = (w.astype(jnp.float32) * scale).astype(x.dtype)
    return jax.lax.dot(x, wide, preferred_element_type=jnp.float32)


# -- the KV cache -------------------------------------------------------------------------------


# An FP8 cache is held as the bytes of its e4m3 values (uint8, a free bitcast either way):
# XLA's CPU backend copies a whole e4m3 cache around each in-place update, 3.6 GB a stage of
# llama3.1-70b-fp8's layer-wise plan, and does not copy a uint8 one.
FP8_CACHE = jnp.uint8


def cache_dtype(kv_dtype: str):
    """The array dtype a KV cache of ``kv_dtype`` is held in."""
    return FP8_CACHE if kv_dtype == "float8_e4m3fn" else jnp.dtype(kv_dtype)


def kv_store(new: jax.Array, scale: jax.Array | None, dtype) -> jax.Array:
    """K or V ``[H, ...]`` as the cache stores them: divided by its per-head ``scale [H]``,
    rounded to e4m3 and held as bytes for an FP8 cache; cast otherwise."""
    if scale is None:
        return new.astype(dtype)
    s = scale.astype(jnp.float32).reshape((-1,) + (1,) * (new.ndim - 1))
    return jax.lax.bitcast_convert_type(to_fp8(new.astype(jnp.float32) / s), FP8_CACHE)


def kv_load(stored: jax.Array, scale: jax.Array | None, dtype) -> jax.Array:
    """Cache entries ``[H, ...]`` back in ``dtype``: an FP8 cache's times its per-head scale."""
    if scale is None:
        return stored.astype(dtype)
    s = scale.astype(jnp.float32).reshape((-1,) + (1,) * (stored.ndim - 1))
    values = jax.lax.bitcast_convert_type(stored, jnp.float8_e4m3fn).astype(jnp.float32)
    return (values * s).astype(dtype)


# -- weights (numpy: loading and random models) ------------------------------------------------


def quantize_leaf(w: np.ndarray, inputs: int, scale_shape) -> tuple[np.ndarray, np.ndarray]:
    """One layer's canonical matrix (its first ``inputs`` axes its inputs) -> (e4m3 values,
    f32 scales of ``scale_shape``): per output channel where that is the outputs' shape; else
    the scale shape's leading axes split the inputs into groups, a scale per group and output
    (``config.quant.scale_leaves``). An all-zero channel or group gets scale 1."""
    import ml_dtypes

    w32 = np.asarray(w, np.float32)
    outputs = w32.shape[inputs:]
    channels = tuple(scale_shape) == tuple(outputs)  # one group: all the inputs
    groups = (1,) * inputs if channels else scale_shape[:inputs]
    split = []
    for n, g in zip(w32.shape[:inputs], groups, strict=True):
        split += [g, n // g]
    grouped = w32.reshape(*split, *outputs)
    within = tuple(2 * i + 1 for i in range(inputs))
    amax = np.max(np.abs(grouped), axis=within)
    scale = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)
    q = np.clip(grouped / np.expand_dims(scale, within), -FP8_MAX, FP8_MAX)
    q = q.astype(ml_dtypes.float8_e4m3fn).reshape(w32.shape)
    return q, scale.reshape(scale_shape)
