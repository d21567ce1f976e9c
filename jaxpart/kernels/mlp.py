"""Fused MLP, ``gelu(x @ w1) @ w2``: a Pallas kernel whose hidden activation never leaves on-chip
memory, its pure-jnp reference, and the backend switch (pallas | xla | auto).

The kernel's grid is (row tiles of x, chunks of the MLP width F). Program (i, c) computes
``h = gelu(x_i @ w1[:, c])`` tile by tile over d_model with an f32 accumulator, keeps ``h`` on
chip, and writes ``h @ w2[c, :]`` in f32, tile by tile over d_model. The F chunks run as parallel
programs, so a decode step with a handful of rows still spreads W1 and W2 over every SM and reads
each weight once; their f32 partial products (F / block_f of them, each m x d_model) are summed by
one small XLA reduction. At decode shapes those partials are a few percent of the weight bytes.
A single program cannot hold the full ``[block_m, d_model]`` f32 accumulator on chip at dense16
dims (16 x 4096 x 4 bytes = 256 KiB > 227 KiB), which is why the sum over F is not in-kernel.

Tiles are chosen so that their working set (x, W1 and W2 tiles times the pipeline buffers, plus
the f32 ``h`` and output tiles) fits the mesh's ``smem`` capacity, and follow Triton's rules:
power-of-2 blocks, dot dimensions >= 16. On CPU, Pallas runs only in interpret mode (for tests).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

BACKENDS = ("auto", "pallas", "xla")
MIN_BLOCK = 16  # Triton: every dot dimension >= 16
MAX_BLOCK_M = 64
MAX_BLOCK = 256
DEFAULT_SRAM_BYTES = 227 * 1024  # H100: shared memory one block may use
_warned: set[str] = set()


class KernelFallbackError(RuntimeError):
    """Pallas was asked for strictly and cannot run these shapes or on this platform."""


@dataclass(frozen=True)
class BlockSizes:
    block_m: int  # rows of x per program
    block_f: int  # MLP-width chunk per program (h is block_m x block_f, on chip)
    block_k: int  # d_model tile of the x @ w1 contraction
    block_d: int  # d_model tile of the output
    num_warps: int = 4
    num_stages: int = 2  # pipeline buffers for the x, W1 and W2 tiles

    def __post_init__(self):
        for name in ("block_m", "block_f", "block_k", "block_d"):
            value = getattr(self, name)
            if value < MIN_BLOCK or value & (value - 1):
                raise ValueError(f"{name}={value} must be a power of 2 >= {MIN_BLOCK}")
        if self.num_stages < 1 or self.num_warps < 1:
            raise ValueError(f"{self.num_stages=} and {self.num_warps=} must be >= 1")

    def working_set_bytes(self, dtype_bytes: int) -> int:
        """On-chip bytes of one program: buffered input tiles plus the f32 h and output tiles."""
        bm, bf, bk, bd = self.block_m, self.block_f, self.block_k, self.block_d
        tiles = (bm * bk + bk * bf + bf * bd) * dtype_bytes * self.num_stages
        return tiles + (bm * bf + bm * bd) * 4


@dataclass(frozen=True)
class KernelChoice:
    """How the model's MLP runs: passed down to every layer, hashable for jit."""

    backend: str = "xla"
    sram_bytes: int = DEFAULT_SRAM_BYTES
    strict: bool = False
    interpret: bool | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"--mlp-kernel = {self.backend!r}: use one of {list(BACKENDS)}")


XLA_KERNEL = KernelChoice()


def _largest_pow2_divisor(n: int, cap: int) -> int:
    return min(n & -n, cap)


def choose_block_sizes(
    m: int, d_model: int, d_ff: int, dtype, sram_bytes: int, num_stages: int = 2
) -> BlockSizes:
    """The largest legal tiles whose working set fits ``sram_bytes``.

    Starts from block_m = next power of 2 of m (16..64) and 256-wide tiles that divide the dims,
    then halves the tile that costs most until the working set fits.
    """
    for name, dim in (("d_model", d_model), ("d_ff", d_ff)):
        if dim % MIN_BLOCK:
            raise ValueError(
                f"{name}={dim} must be a multiple of {MIN_BLOCK} for the Pallas kernel"
            )
    nbytes = jnp.dtype(dtype).itemsize
    sizes = {
        "block_m": min(MAX_BLOCK_M, max(MIN_BLOCK, 1 << max(0, m - 1).bit_length())),
        "block_f": _largest_pow2_divisor(d_ff, MAX_BLOCK),
        "block_k": _largest_pow2_divisor(d_model, MAX_BLOCK),
        "block_d": _largest_pow2_divisor(d_model, MAX_BLOCK),
    }

    def working_set(s):
        return BlockSizes(**s, num_stages=num_stages).working_set_bytes(nbytes)

    # Shrink the contraction and output tiles before h's width and the row count: a wide F chunk
    # keeps the partial-sum traffic low, and block_m follows the batch.
    order = ("block_k", "block_d", "block_f", "block_m")
    while working_set(sizes) > sram_bytes:
        shrinkable = [k for k in order if sizes[k] > MIN_BLOCK]
        if not shrinkable:
            raise ValueError(
                f"even the smallest legal tiles ({MIN_BLOCK} x {MIN_BLOCK}, {num_stages} buffers, "
                f"{jnp.dtype(dtype).name}) need {working_set(sizes)} bytes, more than "
                f"sram_bytes={sram_bytes}"
            )
        biggest = max(shrinkable, key=lambda k: (sizes[k], -order.index(k)))
        sizes[biggest] //= 2
    warps = 8 if sizes["block_m"] * max(sizes["block_f"], sizes["block_d"]) >= 64 * 128 else 4
    return BlockSizes(**sizes, num_warps=warps, num_stages=num_stages)


def _gelu(x):
    """tanh-approximate GELU, the same formula as jax.nn.gelu(approximate=True)."""
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def mlp_reference(x, w1, w2, out_dtype=None):
    """gelu(x @ w1) @ w2 with f32 accumulation; h is rounded to x's dtype as the kernel does."""
    h = _gelu(jnp.dot(x, w1, preferred_element_type=jnp.float32)).astype(x.dtype)
    return jnp.dot(h, w2, preferred_element_type=jnp.float32).astype(out_dtype or x.dtype)


def _fused_mlp_kernel(x_ref, w1_ref, w2_ref, o_ref, *, block_k: int, block_d: int):
    """One (row tile, F chunk): x_ref [bm, d], w1_ref [d, bf], w2_ref [bf, d], o_ref [bm, d]."""
    block_m, block_f = x_ref.shape[0], w1_ref.shape[1]
    d_model = x_ref.shape[1]

    def contract(k, h):
        xk = x_ref[:, pl.ds(k * block_k, block_k)]
        wk = w1_ref[pl.ds(k * block_k, block_k), :]
        return h + jnp.dot(xk, wk, preferred_element_type=jnp.float32)

    h = jax.lax.fori_loop(
        0, d_model // block_k, contract, jnp.zeros((block_m, block_f), jnp.float32)
    )
    h = _gelu(h).astype(w2_ref.dtype)

    def project(j, carry):
        cols = pl.ds(j * block_d, block_d)
        o_ref[:, cols] = jnp.dot(h, w2_ref[:, cols], preferred_element_type=jnp.float32)
        return carry

    jax.lax.fori_loop(0, d_model // block_d, project, 0)


@functools.partial(jax.jit, static_argnames=("block_sizes", "interpret", "out_dtype"))
def _fused_mlp_pallas(x, w1, w2, *, block_sizes: BlockSizes, interpret: bool, out_dtype):
    m, d_model = x.shape
    d_ff = w1.shape[1]
    bs = block_sizes
    for name, dim, block in (
        ("d_ff", d_ff, bs.block_f),
        ("d_model", d_model, bs.block_k),
        ("d_model", d_model, bs.block_d),
    ):
        if dim % block:
            raise ValueError(f"{name}={dim} must be a multiple of the block {block}")
    # Pad rows to whole tiles ourselves (zeros: gelu(0) = 0), so no partial block exists and
    # interpret mode's NaN padding can never reach a contraction.
    m_pad = -(-m // bs.block_m) * bs.block_m
    if m_pad != m:
        x = jnp.pad(x, ((0, m_pad - m), (0, 0)))
    n_f = d_ff // bs.block_f
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pltriton

        compiler_params = pltriton.CompilerParams(num_warps=bs.num_warps, num_stages=bs.num_stages)
    partial = pl.pallas_call(
        functools.partial(_fused_mlp_kernel, block_k=bs.block_k, block_d=bs.block_d),
        out_shape=jax.ShapeDtypeStruct((n_f, m_pad, d_model), jnp.float32),
        grid=(m_pad // bs.block_m, n_f),
        in_specs=[
            pl.BlockSpec((bs.block_m, d_model), lambda i, c: (i, 0)),
            pl.BlockSpec((d_model, bs.block_f), lambda i, c: (0, c)),
            pl.BlockSpec((bs.block_f, d_model), lambda i, c: (c, 0)),
        ],
        out_specs=pl.BlockSpec((None, bs.block_m, d_model), lambda i, c: (c, i, 0)),
        interpret=interpret,
        compiler_params=compiler_params,
        name="fused_mlp",
    )(x, w1, w2)
    return partial.sum(axis=0)[:m].astype(out_dtype)


def _fallback(reason: str, strict: bool) -> str:
    if strict:
        raise KernelFallbackError(f"Pallas MLP kernel unavailable: {reason} (strict mode)")
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"Pallas MLP kernel unavailable, using XLA: {reason}", stacklevel=3)
    return "xla"


def resolve_backend(backend: str, strict: bool = False, interpret: bool | None = None):
    """-> ("pallas" | "xla", interpret): what actually runs on this platform."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {list(BACKENDS)}")
    platform = jax.default_backend()
    if backend == "xla" or (backend == "auto" and platform == "cpu"):
        return "xla", False
    if platform == "cpu":
        if interpret is False:
            raise KernelFallbackError("on CPU, Pallas runs only in interpret mode (interpret=True)")
        return "pallas", True
    if platform != "gpu":
        return _fallback(f"no Pallas GPU lowering on platform {platform!r}", strict), False
    return "pallas", bool(interpret)


def fused_mlp(
    x,
    w1,
    w2,
    *,
    backend: str = "auto",
    block_sizes: BlockSizes | None = None,
    interpret: bool | None = None,
    strict: bool = False,
    sram_bytes: int = DEFAULT_SRAM_BYTES,
    out_dtype=None,
):
    """gelu(x @ w1) @ w2 for x ``[..., d_model]``, w1 ``[d_model, d_ff]``, w2 ``[d_ff, d_model]``.

    backend: "pallas" (Triton on GPU, interpret mode on CPU), "xla" (the reference under jit) or
    "auto" (Pallas on GPU, XLA on CPU). A Pallas request that cannot be met falls back to XLA with
    one warning per reason, or raises ``KernelFallbackError`` when ``strict``.
    """
    out_dtype = out_dtype or x.dtype
    chosen, interpret = resolve_backend(backend, strict, interpret)
    lead, d_model = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, d_model)
    if chosen == "pallas":
        try:
            bs = block_sizes or choose_block_sizes(
                x2.shape[0], d_model, w1.shape[1], x.dtype, sram_bytes
            )
        except ValueError as e:
            chosen = _fallback(str(e), strict)
    if chosen == "xla":
        out = mlp_reference(x2, w1, w2, out_dtype)
    else:
        out = _fused_mlp_pallas(
            x2, w1, w2, block_sizes=bs, interpret=interpret, out_dtype=jnp.dtype(out_dtype)
        )
    return out.reshape(*lead, d_model)
