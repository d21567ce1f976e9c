"""The MLP, ``gelu(x @ w1) @ w2`` or SwiGLU's ``(silu(x @ w1) * (x @ w3)) @ w2``: two Pallas
kernels in which every program owns its output tile, their pure-jnp reference, and the backend
switch (pallas | xla | auto).

- **up**: program (i, c) computes ``h[i, c] = gelu(x_i @ w1[:, c])`` (SwiGLU: the gate and up
  tiles together, ``silu(x_i @ w1[:, c]) * (x_i @ w3[:, c])``), a loop over d_model in
  ``block_k`` steps into f32 tiles, the activation applied on chip, one store of h's tile.
- **down**: program (i, j) computes ``y[i, j] = h_i @ w2[:, j]``, a loop over d_ff.

Why not one fused kernel: a program that owns an F chunk must add its ``[m, d_model]`` product to
everyone else's. Partial sums in HBM cost ``m / block_f`` of the weight bytes (25-100% at the
shipped decode shapes), and so would atomic adds; one program per output tile would re-read W1
once per tile. Here nothing is reduced across programs, each weight is read once, and the only
intermediate is h, ``m x d_ff``: written once and read once, ``m / d_model`` of the weight bytes,
small enough at decode to stay in L2.

**Cache-resident weights.** Weight tiles are loaded with ``eviction_policy="evict_last"`` and the
streamed activations (x, h) with ``evict_first``, so that a stage's weights stay in L2 between
microbatches while its KV cache streams past them.

**Programs.** The output tiles (``block_f`` of h, ``block_d`` of y) are the widest power of 2 up
to 256 that still gives ``sm_count`` programs. At the narrowest tile Triton allows (16, a dot
dimension) a matrix with fewer than ``16 * sm_count`` columns cannot give every SM a program:
dense16's TP8 shard of W1 (2048 columns: 128 programs of 132), dense16-l2's W2 (1024: 64) and
its TP8 shard of W1 (512: 32), and the CPU model. More programs would need the contraction split,
whose f32 partial sums cost more than 5% of the weight bytes at m = 64, or the rows split, which
reads each weight tile once per row tile. ``programs()`` reports the count.

**Prefill.** ``auto`` sends more than ``DECODE_ROWS`` rows to XLA: there the GEMMs are
compute-bound and cuBLAS is the better kernel. ``jaxpart.model.layers`` runs long prompts' MLPs
``ROW_CHUNK`` rows at a time on every backend, so h stays bounded.

Tiles follow Triton's rules (power-of-2 blocks, dot dimensions >= 16) and their working set fits
the mesh's ``smem`` capacity. On CPU, Pallas runs only in interpret mode (for tests).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxpart.config.quant import ACTIVATION_WORDS
from jaxpart.model.kernels.backend import (
    AUTO,
    DEFAULT_SM_COUNT,
    DEFAULT_SRAM_BYTES,
    KernelChoice,
    cpu_barrier,
    fallback,
    resolve,
)
from jaxpart.model.quant import fp8_matmul, quantize_rows

MIN_BLOCK = 16  # Triton: every dot dimension >= 16
MAX_BLOCK_M = 64
MAX_BLOCK = 256
DECODE_ROWS = 256  # auto: more rows than this go to XLA (prefill)


@dataclass(frozen=True)
class BlockSizes:
    block_m: int  # rows of x per program
    block_f: int  # h tile width (up kernel's output columns)
    block_d: int  # y tile width (down kernel's output columns)
    block_k: int  # contraction tile: over d_model in up, over d_ff in down
    num_warps: int = 4
    num_stages: int = 2  # pipeline buffers for the input tiles
    gated: bool = False  # SwiGLU: the up kernel reads two weight tiles into two accumulators

    def __post_init__(self):
        for name in ("block_m", "block_f", "block_d", "block_k"):
            value = getattr(self, name)
            if value < MIN_BLOCK or value & (value - 1):
                raise ValueError(f"{name}={value} must be a power of 2 >= {MIN_BLOCK}")
        if self.num_stages < 1 or self.num_warps < 1:
            raise ValueError(f"{self.num_stages=} and {self.num_warps=} must be >= 1")

    def working_set_bytes(self, dtype_bytes: int) -> int:
        """On-chip bytes of one program of the larger kernel: buffered input tiles plus its f32
        accumulator."""
        bm, bk = self.block_m, self.block_k
        up = 2 if self.gated else 1
        return max(
            (bm * bk + n * bk * width) * dtype_bytes * self.num_stages + n * bm * width * 4
            for n, width in ((up, self.block_f), (1, self.block_d))
        )


def _largest_pow2_divisor(n: int, cap: int) -> int:
    return min(n & -n, cap)


def _output_tile(columns: int, row_tiles: int, sm_count: int) -> int:
    """The widest legal tile of ``columns`` that still gives ``sm_count`` programs."""
    tile = _largest_pow2_divisor(columns, MAX_BLOCK)
    while tile > MIN_BLOCK and row_tiles * (columns // tile) < sm_count:
        tile //= 2
    return tile


def choose_block_sizes(
    m: int,
    d_model: int,
    d_ff: int,
    dtype,
    sram_bytes: int = DEFAULT_SRAM_BYTES,
    num_stages: int = 2,
    sm_count: int = DEFAULT_SM_COUNT,
    gated: bool = False,
) -> BlockSizes:
    """Legal tiles for ``m`` rows: output tiles narrow enough for ``sm_count`` programs, then the
    contraction tile (and, if need be, the others) halved until the working set fits
    ``sram_bytes``."""
    for name, dim in (("d_model", d_model), ("d_ff", d_ff)):
        if dim % MIN_BLOCK:
            raise ValueError(
                f"{name}={dim} must be a multiple of {MIN_BLOCK} for the Pallas kernel"
            )
    nbytes = jnp.dtype(dtype).itemsize
    block_m = min(MAX_BLOCK_M, max(MIN_BLOCK, 1 << max(0, m - 1).bit_length()))
    row_tiles = -(-m // block_m)
    sizes = {
        "block_m": block_m,
        "block_f": _output_tile(d_ff, row_tiles, sm_count),
        "block_d": _output_tile(d_model, row_tiles, sm_count),
        "block_k": _largest_pow2_divisor(math.gcd(d_model, d_ff), MAX_BLOCK),
    }

    def working_set(s):
        return BlockSizes(**s, num_stages=num_stages, gated=gated).working_set_bytes(nbytes)

    order = ("block_k", "block_f", "block_d", "block_m")
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
    widest = max(sizes["block_f"], sizes["block_d"])
    warps = 8 if sizes["block_m"] * widest >= 64 * 128 else 4
    return BlockSizes(**sizes, num_warps=warps, num_stages=num_stages, gated=gated)


def programs(m: int, d_model: int, d_ff: int, bs: BlockSizes) -> dict[str, int]:
    """Programs each kernel launches for ``m`` rows."""
    row_tiles = -(-m // bs.block_m)
    return {"up": row_tiles * (d_ff // bs.block_f), "down": row_tiles * (d_model // bs.block_d)}


def _gelu(x):
    """tanh-approximate GELU, the same formula as jax.nn.gelu(approximate=True)."""
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _swiglu(gate, up):
    return gate * jax.nn.sigmoid(gate) * up


def _geglu(gate, up):
    """Gemma's gated MLP: tanh-GELU of the gate times up."""
    return _gelu(gate) * up


GATED = {"silu": _swiglu, "gelu": _geglu}


def mlp_reference(x, w1, w2, out_dtype=None, w3=None, gated_act="silu"):
    """gelu(x @ w1) @ w2, or (act(x @ w1) * (x @ w3)) @ w2 (act: silu, SwiGLU; or tanh-GELU,
    GeGLU), with f32 accumulation; h is rounded to x's dtype as the kernels do."""
    w1, w2 = w1.astype(x.dtype), w2.astype(x.dtype)  # no-ops, but for 8-bit weights
    a = jnp.dot(x, w1, preferred_element_type=jnp.float32)
    if w3 is None:
        h = _gelu(a)
    else:
        up = jnp.dot(x, w3.astype(x.dtype), preferred_element_type=jnp.float32)
        h = GATED[gated_act](a, up)
    h = h.astype(x.dtype)
    return jnp.dot(h, w2, preferred_element_type=jnp.float32).astype(out_dtype or x.dtype)


def mlp_fp8(x, w1, w2, scales: dict, quant, out_dtype=None, w3=None, gated_act="silu"):
    """The MLP with FP8 weights (``model.quant``): each GEMM an FP8 GEMM with its weights'
    scales (``scales``: this layer's ``w1_scale``... and, for static activations,
    ``w1_in_scale``...), the hidden activation rounded to x's dtype and quantised again for
    the down projection."""

    def gemm(a, name, w):
        return fp8_matmul(a, w, scales[f"{name}_scale"], quant, scales.get(f"{name}_in_scale"))

    a = gemm(x, "w1", w1)
    h = _gelu(a) if w3 is None else GATED[gated_act](a, gemm(x, "w3", w3))
    return gemm(h.astype(x.dtype), "w2", w2).astype(out_dtype or x.dtype)


def _load(ref, policy: str):
    from jax.experimental.pallas import triton as pltriton

    return pltriton.load(ref, eviction_policy=policy or None)


def _tile_kernel(
    layer_ref, a_ref, *refs, block_k: int, activation, hints: bool, scaled: bool = False
):
    """One output tile: ``o = activation(a @ w[layer] for each weight stack w)`` over the
    contraction in ``block_k`` steps, one f32 accumulator a stack (GELU's up and the down
    projection: one; SwiGLU's gate and up: two, sharing each tile of ``a``). a_ref [bm, K]
    streams (evict_first); the weights are whole stacks [n, K, N], read at this program's columns
    of layer ``layer_ref[0]`` (evict_last).

    ``scaled`` (FP8): ``a`` and the weights are e4m3; the refs then also hold the rows' scales
    ``[bm, 1]`` (first) and each stack's column scales ``[n, N]`` (after the stacks), and each
    f32 accumulator is multiplied by both before the activation."""
    *refs, o_ref = refs
    n = (len(refs) - 1) // 2 if scaled else len(refs)
    row_ref = refs[0] if scaled else None
    w_refs = refs[1 : 1 + n] if scaled else refs
    col_refs = refs[1 + n :] if scaled else ()
    block_m, block_n = o_ref.shape
    layer = layer_ref[0]
    columns = pl.ds(pl.program_id(1) * block_n, block_n)
    weights, stream = ("evict_last", "evict_first") if hints else ("", "")

    def step(k, accs):
        rows = pl.ds(k * block_k, block_k)
        a = _load(a_ref.at[:, rows], stream)
        return tuple(
            acc
            + jnp.dot(
                a, _load(w.at[layer, rows, columns], weights), preferred_element_type=jnp.float32
            )
            for acc, w in zip(accs, w_refs, strict=True)
        )

    zeros = tuple(jnp.zeros((block_m, block_n), jnp.float32) for _ in w_refs)
    accs = jax.lax.fori_loop(0, a_ref.shape[1] // block_k, step, zeros)
    if scaled:
        rows_scale = row_ref[...]
        accs = tuple(
            acc * rows_scale * c[layer, columns][None, :]
            for acc, c in zip(accs, col_refs, strict=True)
        )
    o_ref[...] = activation(*accs).astype(o_ref.dtype)


def _tiled_matmul(
    a,
    stacks,
    layer,
    *,
    block_m,
    block_n,
    block_k,
    activation,
    out_dtype,
    params,
    name,
    hints,
    row_scale=None,
    col_scales=(),
):
    """``activation(a @ w[layer], ...)`` for the weight ``stacks`` (all [n, K, N]); FP8:
    with ``row_scale [m, 1]`` and ``col_scales`` (one [n, N] a stack)."""
    m, n = a.shape[0], stacks[0].shape[2]
    whole = pl.BlockSpec(stacks[0].shape, lambda i, j: (0, 0, 0))  # the stacks, whole: no copy
    scaled = row_scale is not None
    extra, extra_specs = (), []
    if scaled:
        extra = (row_scale,)
        extra_specs = [pl.BlockSpec((block_m, 1), lambda i, j: (i, 0))]
    col_specs = [pl.BlockSpec(c.shape, lambda i, j: (0, 0)) for c in col_scales]
    kernel = functools.partial(
        _tile_kernel, block_k=block_k, activation=activation, hints=hints, scaled=scaled
    )
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
        grid=(m // block_m, n // block_n),
        in_specs=[
            pl.BlockSpec((1,), lambda i, j: (0,)),
            pl.BlockSpec((block_m, a.shape[1]), lambda i, j: (i, 0)),
            *extra_specs,
            *[whole] * len(stacks),
            *col_specs,
        ],
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
        interpret=params is None,
        compiler_params=params,
        name=name,
    )(layer, a, *extra, *stacks, *col_scales)


@functools.partial(
    jax.jit,
    static_argnames=("block_sizes", "interpret", "out_dtype", "hints", "gated_act", "quant"),
)
def _mlp_pallas(
    x,
    w1,
    w2,
    layer,
    w3=None,
    scales=None,
    *,
    block_sizes: BlockSizes,
    interpret: bool,
    out_dtype,
    hints: bool = True,
    gated_act: str = "silu",
    quant=None,
):
    """x [m, d]; w1 (and w3) [n, d, F] and w2 [n, F, d] stacks of which layer ``layer [1]`` is
    used; a gated MLP's activation is ``gated_act``. ``hints=False`` drops the eviction hints
    (to measure what they buy).

    FP8 (``quant``, per-channel ``scales``: ``w1_scale`` [n, F]...): x is quantised per row
    before the up kernel and h before the down kernel (``quant.quantize_rows``, in XLA: a row's
    scale needs the whole row), the kernels multiply e4m3 tiles into f32 and scale each
    accumulator by its rows' and columns' scales."""
    m, d_model = x.shape
    d_ff = w1.shape[2]
    bs = block_sizes
    for name, dim, block in (
        ("d_ff", d_ff, bs.block_f),
        ("d_ff", d_ff, bs.block_k),
        ("d_model", d_model, bs.block_k),
        ("d_model", d_model, bs.block_d),
    ):
        if dim % block:
            raise ValueError(f"{name}={dim} must be a multiple of the block {block}")
    # Pad rows to whole tiles ourselves (zeros: gelu(0) = silu(0) = 0), so no partial block
    # exists and interpret mode's NaN padding can never reach a contraction.
    m_pad = -(-m // bs.block_m) * bs.block_m
    if m_pad != m:
        x = jnp.pad(x, ((0, m_pad - m), (0, 0)))
    params = None
    if not interpret:
        from jax.experimental.pallas import triton as pltriton

        params = pltriton.CompilerParams(num_warps=bs.num_warps, num_stages=bs.num_stages)
    common = dict(block_m=bs.block_m, block_k=bs.block_k, params=params, hints=hints)
    if w3 is None:
        up = dict(stacks=(w1,), activation=_gelu, name="mlp_up")
    else:
        up = dict(stacks=(w1, w3), activation=GATED[gated_act], name="mlp_up_gated")
    a, down = x, {}
    if scales is not None:
        a, row_scale = quantize_rows(x, 1, quant.scale_ub, quant.scale_floor)
        names = ("w1",) if w3 is None else ("w1", "w3")
        up |= dict(row_scale=row_scale, col_scales=tuple(scales[f"{n}_scale"] for n in names))
    h = _tiled_matmul(a, layer=layer, block_n=bs.block_f, out_dtype=x.dtype, **up, **common)
    if scales is not None:
        h, h_scale = quantize_rows(h, 1, quant.scale_ub, quant.scale_floor)
        down = dict(row_scale=h_scale, col_scales=(scales["w2_scale"],))
    y = _tiled_matmul(
        h,
        (w2,),
        layer,
        block_n=bs.block_d,
        activation=lambda a: a,
        out_dtype=out_dtype,
        name="mlp_down",
        **common,
        **down,
    )
    return y[:m]


def _pallas_fp8_problem(quant, scaled: bool, dtype) -> str | None:
    """Why the Pallas kernels cannot take these 8-bit weights (None: they can): they take
    e4m3 weights with per-channel scales and activations quantised per token."""
    if not scaled:
        return f"{jnp.dtype(dtype).name} weights without scales"
    if quant.group:
        return "FP8 block scales"
    if quant.activations != "token":
        return f"FP8 {ACTIVATION_WORDS[quant.activations]}"
    return None


def mlp(
    x,
    w1,
    w2,
    *,
    w3=None,
    layer=None,
    kernel: KernelChoice = AUTO,
    block_sizes: BlockSizes | None = None,
    out_dtype=None,
    gated_act: str = "silu",
    quant=None,
    scales: dict | None = None,
):
    """gelu(x @ w1) @ w2, or with ``w3`` SwiGLU's (silu(x @ w1) * (x @ w3)) @ w2 (GeGLU's, tanh
    GELU for silu, with ``gated_act="gelu"``), for x ``[..., d_model]``, w1 and w3
    ``[d_model, d_ff]``, w2 ``[d_ff, d_model]``; or, given ``layer``, ``[n, ...]`` stacks of
    which that layer is used. The kernels read the layer
    straight from the stack: slicing it out first would copy the layer's weights on every call.

    ``kernel.mlp``: "pallas" (Triton on GPU, interpret mode on CPU), "xla" (the reference under
    jit) or "auto" (Pallas on GPU for decode-sized inputs, else XLA). A Pallas request that
    cannot be met falls back to XLA with one warning per reason, or raises
    ``KernelFallbackError`` when ``kernel.strict``.

    FP8 weights (``quant``, with the stacks' ``scales``) run the Pallas kernels on e4m3 tiles
    where their scales are per channel and the activations per token (``_mlp_pallas``), else
    ``mlp_fp8`` through XLA.
    """
    out_dtype = out_dtype or x.dtype
    lead, d_model = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, d_model)
    if layer is None:
        w1, w2, layer = w1[None], w2[None], 0
        w3 = None if w3 is None else w3[None]
        scales = None if scales is None else {k: v[None] for k, v in scales.items()}
    chosen, interpret = resolve("MLP", kernel.mlp, kernel)
    fp8 = quant is not None and bool(scales)
    if chosen == "pallas" and jnp.dtype(w1.dtype).itemsize == 1:
        why = _pallas_fp8_problem(quant, fp8, w1.dtype)
        if why:
            chosen = fallback("MLP", why, kernel.strict)
    if chosen == "pallas" and kernel.mlp == "auto" and x2.shape[0] > DECODE_ROWS:
        chosen = "xla"  # prefill: compute-bound GEMMs, XLA's (cuBLAS) job
    if chosen == "pallas":
        try:
            bs = block_sizes or choose_block_sizes(
                x2.shape[0],
                d_model,
                w1.shape[2],
                w1.dtype if fp8 else x.dtype,
                kernel.sram_bytes,
                sm_count=kernel.sm_count,
                gated=w3 is not None,
            )
        except ValueError as e:
            chosen = fallback("MLP", str(e), kernel.strict)
    if chosen == "xla":
        gate_up = None if w3 is None else cpu_barrier(w3[layer], kernel)
        w1l, w2l = cpu_barrier(w1[layer], kernel), cpu_barrier(w2[layer], kernel)
        if quant is not None and scales:
            own = {k: v[layer] for k, v in scales.items()}
            out = mlp_fp8(x2, w1l, w2l, own, quant, out_dtype, gate_up, gated_act)
        else:
            out = mlp_reference(x2, w1l, w2l, out_dtype, gate_up, gated_act)
    else:
        index = jnp.asarray(layer, jnp.int32).reshape(1)
        out = _mlp_pallas(
            x2,
            w1,
            w2,
            index,
            w3,
            scales if fp8 else None,
            block_sizes=bs,
            interpret=interpret,
            out_dtype=jnp.dtype(out_dtype),
            gated_act=gated_act,
            quant=quant if fp8 else None,
        )
    return out.reshape(*lead, d_model)
