"""The decoder's maths as functions of arrays: RMSNorm, rotary causal attention with a KV cache,
the MLP (through ``jaxpart.model.kernels``), a decoder layer, a stack of layers, and the whole
forward.

No Flax here: the executors call these inside ``shard_map`` and ``scripts/bench_gpu.py`` imports
them where only jax and numpy are installed. ``tensor_axis`` names the mesh axis a stage's heads
and MLP are split over (one psum after attention, one after the MLP).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.config.quant import Fp8Scheme
from jaxpart.config.rope import RopeScaling, inv_freq
from jaxpart.model.kernels.attention import decode_attention, prefill_attention
from jaxpart.model.kernels.backend import AUTO, XLA, KernelChoice, cpu_barrier
from jaxpart.model.kernels.mlp import mlp as mlp_kernel
from jaxpart.model.quant import fp8_matmul, kv_load, kv_store
from jaxpart.planning.memory import ROW_CHUNK, cache_positions

ROPE_THETA = 10_000.0  # defaults; a model file's rope_theta and norm_eps replace them
NORM_EPS = 1e-6


@dataclass(frozen=True)
class Arch:
    """What a layer needs beyond its weights: hashable, so that jit takes it as static."""

    rope_theta: float = ROPE_THETA
    norm_eps: float = NORM_EPS
    rope_scaling: RopeScaling | None = None
    window: int = 0  # sliding attention window of every layer (0: none)
    layer_windows: tuple[int, ...] = ()  # each layer's window where they differ (0: none)
    local_theta: float = 0.0  # windowed layers' own plain RoPE base (Gemma 3); 0: none
    norm_plus_one: bool = False  # Gemma: RMSNorm scaled by (1 + w)
    sandwich: bool = False  # Gemma 2: norms after attention and around the MLP
    embed_scale: float = 0.0  # embeddings times this (Gemma: sqrt(d_model)); 0: none
    query_scale: float = 1.0  # q multiplied by this before the kernels' head_dim ** -0.5
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    gated_act: str = "silu"  # the gated MLP's activation: "silu" (SwiGLU) or "gelu" (GeGLU)
    quant: Fp8Scheme | None = None  # FP8 weights: their scales and the activations' quantisation


DEFAULT_ARCH = Arch()


def arch_of(cfg) -> Arch:
    """A model config's architecture constants."""
    return Arch(
        rope_theta=float(cfg.rope_theta),
        norm_eps=float(cfg.norm_eps),
        rope_scaling=cfg.rope_scaling,
        window=int(cfg.sliding_window),
        layer_windows=tuple(int(w) for w in cfg.layer_windows),
        local_theta=float(cfg.local_rope_theta),
        norm_plus_one=bool(cfg.norm_plus_one),
        sandwich=bool(cfg.sandwich_norms),
        embed_scale=float(cfg.d_model) ** 0.5 if cfg.scale_embeddings else 0.0,
        query_scale=(
            (cfg.head_dim / cfg.query_pre_attn_scalar) ** 0.5 if cfg.query_pre_attn_scalar else 1.0
        ),
        attn_softcap=float(cfg.attn_softcap),
        final_softcap=float(cfg.final_softcap),
        gated_act="gelu" if cfg.mlp == "geglu" else "silu",
        quant=cfg.quant,
    )


def jnp_dtype(name: str):
    return {
        "float32": jnp.float32,
        "bfloat16": jnp.bfloat16,
        "float16": jnp.float16,
        "float8_e4m3fn": jnp.float8_e4m3fn,
    }[name]


def widen(w: jax.Array, like: jax.Array) -> jax.Array:
    """8-bit float weights or cache entries widened to ``like``'s dtype for arithmetic (JAX does
    not promote them implicitly); others as they are."""
    return w.astype(like.dtype) if jnp.dtype(w.dtype).itemsize == 1 else w


def empty_cache(n_layers, batch, seq_len, n_heads, head_dim, dtype):
    """K and V caches ``[heads, layers, batch, positions, head_dim]``: heads first, so that the
    decode kernel can read the whole cache as its page pool (see kernels/attention.py)."""
    shape = (n_heads, n_layers, batch, cache_positions(seq_len), head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def _dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """Matmul with f32 accumulation whatever the storage dtype."""
    return jnp.einsum(spec, a, widen(b, a), preferred_element_type=jnp.float32)


def _project(x: jax.Array, p, name: str, arch: Arch) -> jax.Array:
    """An attention projection in f32: wq, wk, wv (``x [b, T, d]`` -> ``[b, T, H, K]``) or wo
    (``x [b, T, H, K]`` -> ``[b, T, d]``); with FP8 weights, an FP8 GEMM with their scales
    (``model.quant``): the contraction and the outputs flattened, the scales with them."""
    w = p[name]
    if arch.quant is None or f"{name}_scale" not in p:
        spec = "bthk,hkd->btd" if name == "wo" else "btd,dhk->bthk"
        return _dot(spec, x, w)
    b, t = x.shape[:2]
    inputs = 2 if name == "wo" else 1
    c = int(np.prod(w.shape[:inputs]))
    scale = p[f"{name}_scale"]
    if scale.ndim > w.ndim - inputs:  # block scales: [groups..., outputs...]
        groups = int(np.prod(scale.shape[:inputs]))
        scale = scale.reshape(groups, -1)
    else:
        scale = scale.reshape(-1)
    y = fp8_matmul(
        x.reshape(b * t, c), w.reshape(c, -1), scale, arch.quant, p.get(f"{name}_in_scale")
    )
    return y.reshape(b, t, *w.shape[inputs:])


def rms_norm(
    x: jax.Array, scale: jax.Array, eps: float = NORM_EPS, plus_one: bool = False
) -> jax.Array:
    """RMSNorm in f32, scaled by ``scale`` (Gemma's ``plus_one``: by 1 + scale)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    w = scale.astype(jnp.float32)
    return (y * (1.0 + w if plus_one else w)).astype(x.dtype)


def softcap(x: jax.Array, cap: float) -> jax.Array:
    """cap * tanh(x / cap) (Gemma 2's attention scores and logits); x itself where cap is 0."""
    return cap * jnp.tanh(x / cap) if cap else x


def rope_frequencies(
    dim: int, positions: jax.Array, theta: float, scaling: RopeScaling | None
) -> tuple[jax.Array, float]:
    """The inverse frequencies ``[dim / 2]`` and the factor on cos and sin, as transformers
    makes them (``config.rope``). Dynamic NTK and longrope depend on the current length, the
    largest position of the call plus one (transformers: ``max(position_ids) + 1``): a decode
    step's keys are rotated with the frequencies of their own step and cached as they are, as
    transformers caches them."""
    if scaling is None or scaling.type not in ("dynamic", "longrope"):
        freq = jnp.asarray(inv_freq(theta, dim, scaling))
        return freq, scaling.attention_factor if scaling else 1.0
    length = jnp.max(positions).astype(jnp.float32) + 1
    if scaling.type == "longrope":
        short = jnp.asarray(inv_freq(theta, dim, scaling))
        long = jnp.asarray(inv_freq(theta, dim, scaling, long=True))
        return jnp.where(length > scaling.original_max, long, short), scaling.attention_factor
    # dynamic NTK: a larger base once the length passes max_position_embeddings
    seen = jnp.maximum(length, scaling.max_positions)
    factor = scaling.factor
    base = theta * ((factor * seen / scaling.max_positions) - (factor - 1)) ** (dim / (dim - 2))
    exponent = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
    return 1.0 / (base**exponent), 1.0


def rope(
    x: jax.Array,
    positions: jax.Array,
    seq_axis: int = 1,
    theta: float = ROPE_THETA,
    scaling: RopeScaling | None = None,
    local=None,
    local_theta: float = 0.0,
) -> jax.Array:
    """Rotary positions on ``x [..., K]`` whose axis ``seq_axis`` holds ``positions [T]``, or
    ``[b, T]`` per row with the rows on the axis before it (rotate-half form), with the
    model's RoPE scaling (``rope_frequencies``); where ``local`` (traced: Gemma 3's windowed
    layers), plain RoPE at ``local_theta`` instead."""
    half = x.shape[-1] // 2
    freq, attention_factor = rope_frequencies(x.shape[-1], positions, theta, scaling)
    if local is not None:
        plain = jnp.asarray(inv_freq(local_theta, x.shape[-1], None))
        freq = jnp.where(local, plain, freq)
        attention_factor = jnp.where(local, 1.0, attention_factor)
    angle = positions.astype(jnp.float32)[..., None] * freq  # [T, half] or [b, T, half]
    shape = [1] * x.ndim
    shape[seq_axis], shape[-1] = angle.shape[-2:]
    if angle.ndim == 3:
        shape[seq_axis - 1] = angle.shape[0]
    cos, sin = jnp.cos(angle).reshape(shape), jnp.sin(angle).reshape(shape)
    if local is not None or attention_factor != 1.0:  # yarn, longrope: on both cos and sin
        cos, sin = cos * attention_factor, sin * attention_factor
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _layer_window(arch: Arch, model_layer, cache_positions: int, tokens: int):
    """This layer's sliding window: the model's one (an int), or, where layers differ, the
    layer's own, looked up by its index in the model (traced); 0 where no window is shorter
    than what the layer reads (the cache, or a prompt), which is full attention exactly."""
    if not arch.layer_windows:
        return arch.window
    reads = cache_positions if tokens == 1 else tokens
    if all(w == 0 or w >= reads for w in arch.layer_windows):
        return 0
    return jnp.asarray(arch.layer_windows, jnp.int32)[model_layer]


def _reduce(x: jax.Array, tensor_axis: str | None) -> jax.Array:
    return x if tensor_axis is None else jax.lax.psum(x, tensor_axis)


def attention(
    p,
    x,
    k_cache,
    v_cache,
    pos,
    tensor_axis=None,
    layer=0,
    row=0,
    kernel=AUTO,
    arch=DEFAULT_ARCH,
    model_layer=None,
):
    """Causal attention of ``x [b, T, d]`` at positions pos..pos+T.

    The caches are the whole stack ``[H, n, B, S, K]``; x is layer ``layer``'s input for cache
    rows row..row+b. Only the new keys and values are written, in place. A prompt (T > 1) must
    start at position 0 and attends to its own keys (a shorter prompt, padded on the right, is
    untouched by its padding: attention is causal); a decode step (T = 1) is at position ``pos``,
    one for all rows or ``[b]``, one per row, and reads the cache up to it only. Returns
    (out, k_cache, v_cache).
    """
    dtype = x.dtype
    b, t = x.shape[:2]
    if t > 1 and not (isinstance(pos, int) and pos == 0):
        raise ValueError(f"a prompt of {t} tokens must start at position 0, not {pos}")
    positions = jnp.asarray(pos)[..., None] + jnp.arange(t)  # [T], or [b, T] per row
    q = _project(x, p, "wq", arch)
    # New keys and values are made in the cache's layout, [H, b, T, K].
    k = _project(x, p, "wk", arch).transpose(2, 0, 1, 3)
    v = _project(x, p, "wv", arch).transpose(2, 0, 1, 3)
    if "bq" in p:  # attention biases (Qwen2)
        q = q + p["bq"].astype(jnp.float32)
        k = k + p["bk"].astype(jnp.float32)[:, None, None, :]
        v = v + p["bv"].astype(jnp.float32)[:, None, None, :]
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    if "q_norm" in p:  # each head normalised before the rotation (Qwen3)
        eps, one = arch.norm_eps, arch.norm_plus_one
        q, k = rms_norm(q, p["q_norm"], eps, one), rms_norm(k, p["k_norm"], eps, one)
    window = _layer_window(arch, model_layer, k_cache.shape[3], t)
    k_scale, v_scale = p.get("k_scale"), p.get("v_scale")  # an FP8 cache's, per K/V head
    local = None
    if arch.local_theta and arch.layer_windows:  # Gemma 3: windowed layers' own plain RoPE
        local = jnp.asarray([w > 0 for w in arch.layer_windows])[model_layer]
    q = rope(q, positions, 1, arch.rope_theta, arch.rope_scaling, local, arch.local_theta)
    k = rope(k, positions, 2, arch.rope_theta, arch.rope_scaling, local, arch.local_theta)
    if arch.query_scale != 1.0:  # the kernels scale by head_dim ** -0.5; Gemma's scalar instead
        q = (q.astype(jnp.float32) * arch.query_scale).astype(dtype)
    if t == 1:
        o, k_cache, v_cache = decode_attention(
            q[:, 0],
            k[:, :, 0],
            v[:, :, 0],
            k_cache,
            v_cache,
            layer,
            row,
            pos,
            kernel=kernel,
            window=window,
            softcap=arch.attn_softcap,
            k_scale=k_scale,
            v_scale=v_scale,
        )
        o = o[:, None]
    else:
        at = (0, layer, row, 0, 0)
        k8, v8 = kv_store(k, k_scale, k_cache.dtype), kv_store(v, v_scale, v_cache.dtype)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k8[:, None], at)
        v_cache = jax.lax.dynamic_update_slice(v_cache, v8[:, None], at)
        if k_scale is not None:  # an FP8 cache: the prompt attends to what decode will read
            k, v = kv_load(k8, k_scale, dtype), kv_load(v8, v_scale, dtype)
        o = prefill_attention(
            q,
            k.transpose(1, 2, 0, 3),
            v.transpose(1, 2, 0, 3),
            kernel,
            window,
            arch.attn_softcap,
        )
    out = _reduce(_project(o, p, "wo", arch), tensor_axis)
    return out.astype(dtype), k_cache, v_cache


def mlp(
    p, x, tensor_axis=None, kernel: KernelChoice = AUTO, layer=None, gated_act="silu", quant=None
):
    """gelu(x @ w1) @ w2, or with w3 (SwiGLU) (silu(x @ w1) * (x @ w3)) @ w2, through
    ``kernel``; column- then row-split under ``tensor_axis``, whose partial sums are added in
    f32. With ``layer``, p's weights are the whole stack ``[n, ...]`` and that layer is used
    (the kernels read it in place). FP8 weights (``quant``) come with their scales in ``p``.

    A long prompt runs ROW_CHUNK rows at a time, each chunk reduced and rounded on its own: its
    hidden activation (rows x d_ff) and its f32 output would otherwise be 4x and 2x the layer's
    input (2.6 GB and 1.3 GB a microbatch for dense16's prefill).
    """
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]

    def run(r):
        out = mlp_kernel(
            r,
            p["w1"],
            p["w2"],
            w3=p.get("w3"),
            layer=layer,
            kernel=kernel,
            out_dtype=jnp.float32,
            gated_act=gated_act,
            quant=quant,
            scales={k: v for k, v in p.items() if "scale" in k} or None,
        )
        return _reduce(out, tensor_axis).astype(x.dtype)

    if n <= ROW_CHUNK:
        return run(rows).reshape(x.shape)
    chunks = -(-n // ROW_CHUNK)
    padded = jnp.pad(rows, ((0, chunks * ROW_CHUNK - n), (0, 0)))
    out = jax.lax.map(run, padded.reshape(chunks, ROW_CHUNK, -1))
    return out.reshape(-1, x.shape[-1])[:n].reshape(x.shape)


def decoder_layer(
    p,
    x,
    k_cache,
    v_cache,
    pos,
    tensor_axis=None,
    kernel: KernelChoice = AUTO,
    layer=0,
    row=0,
    mlp_stack=None,
    arch: Arch = DEFAULT_ARCH,
    model_layer=None,
):
    """One block; the caches are the whole stack, this block's slot is ``layer`` (see attention),
    its index in the whole model ``model_layer`` (for per-layer windows and RoPE).
    ``mlp_stack`` holds the MLP weights of the whole stack, read at ``layer``."""
    eps, one = arch.norm_eps, arch.norm_plus_one
    a, k_cache, v_cache = attention(
        p,
        rms_norm(x, p["ln1"], eps, one),
        k_cache,
        v_cache,
        pos,
        tensor_axis,
        layer,
        row,
        kernel,
        arch,
        layer if model_layer is None else model_layer,
    )
    if arch.sandwich:  # Gemma 2: a norm on the attention's output before the residual
        a = rms_norm(a, p["ln1_out"], eps, one)
    h = x + a
    out = mlp(
        mlp_stack,
        rms_norm(h, p["ln2"], eps, one),
        tensor_axis,
        kernel,
        layer,
        arch.gated_act,
        arch.quant,
    )
    if arch.sandwich:  # and on the MLP's
        out = rms_norm(out, p["ln2_out"], eps, one)
    return h + out, k_cache, v_cache


def run_layers(
    layers,
    x,
    k_cache,
    v_cache,
    pos,
    tensor_axis=None,
    n_valid=None,
    kernel: KernelChoice = AUTO,
    row=0,
    unroll: bool = False,
    arch: Arch = DEFAULT_ARCH,
    first_layer=0,
):
    """Apply a stack of layers ``[n, ...]`` in order; caches are ``[H, n, B, S, K]`` and x holds
    cache rows row..row+b; the stack's first layer is layer ``first_layer`` of the model (a
    pipeline stage's offset, traced). ``unroll`` lays the layers out flat (XLA's cost analysis
    counts a loop body once, so FLOP counting needs it).

    With ``n_valid`` only the first ``n_valid`` layers run (the rest are padding of a shorter
    pipeline stage and are skipped, not computed and masked).
    """

    # The MLP kernels read their layer from the whole stack (no per-layer copy of its weights).
    mlp_stack = {k: v for k, v in layers.items() if k.split("_")[0] in ("w1", "w2", "w3")}
    rest = {k: v for k, v in layers.items() if k not in mlp_stack}

    def body(carry, j):
        def apply(x, kc, vc):
            # This layer's attention weights and norms, sliced here rather than by scan, so that
            # on CPU the barrier keeps XLA from widening whole stacks to f32 (see cpu_barrier).
            p = cpu_barrier({k: v[j] for k, v in rest.items()}, kernel)
            return decoder_layer(
                p, x, kc, vc, pos, tensor_axis, kernel, j, row, mlp_stack, arch, first_layer + j
            )

        if n_valid is None:
            return apply(*carry), None
        return jax.lax.cond(j < n_valid, apply, lambda *c: c, *carry), None

    n = k_cache.shape[1]
    (x, k_cache, v_cache), _ = jax.lax.scan(
        body, (x, k_cache, v_cache), jnp.arange(n), unroll=unroll
    )
    return x, k_cache, v_cache


def embed_tokens(params, tokens: jax.Array, dtype=None, arch: Arch = DEFAULT_ARCH) -> jax.Array:
    """Token embeddings, in ``dtype`` (the activations') when the table is stored otherwise;
    Gemma's scaled by sqrt(d_model), in the table's dtype as transformers scales them."""
    x = jnp.take(params["embed"], tokens, axis=0)
    if arch.embed_scale:
        x = x * jnp.asarray(arch.embed_scale, x.dtype)
    return x if dtype is None else x.astype(dtype)


def lm_logits(params, x_last: jax.Array, arch: Arch = DEFAULT_ARCH) -> jax.Array:
    """Logits (f32) from hidden states ``[..., d]`` (the last position's, when generating),
    through the LM head, or the embedding transposed when there is none (tied)."""
    x = rms_norm(x_last, params["final_norm"], arch.norm_eps, arch.norm_plus_one)
    if "head" in params:
        return softcap(_dot("...d,dv->...v", x, params["head"]), arch.final_softcap)
    return softcap(_dot("...d,vd->...v", x, params["embed"]), arch.final_softcap)


def forward(
    params,
    tokens,
    k_cache,
    v_cache,
    pos,
    kernel: KernelChoice = AUTO,
    unroll=False,
    arch: Arch = DEFAULT_ARCH,
    last=None,
):
    """All layers on one device: tokens ``[B, T]`` at pos.. -> (logits, k_cache, v_cache), the
    logits at the last position, or at ``last [B]`` per row (a prompt padded on the right)."""
    x = embed_tokens(params, tokens, arch=arch)
    x, k_cache, v_cache = run_layers(
        params["layers"], x, k_cache, v_cache, pos, kernel=kernel, unroll=unroll, arch=arch
    )
    x_last = x[:, -1] if last is None else x[jnp.arange(x.shape[0]), last]
    return lm_logits(params, x_last, arch), k_cache, v_cache


def forward_all(params, tokens, arch: Arch = DEFAULT_ARCH):
    """Logits at every position of ``tokens [B, T]`` (training): the same layers, a fresh cache,
    through XLA (Pallas calls have no gradients)."""
    cfg_shape = params["layers"]["wk"].shape  # [L, d, H_kv, K]
    b, t = tokens.shape
    k, v = empty_cache(cfg_shape[0], b, t, cfg_shape[2], cfg_shape[3], params["embed"].dtype)
    x, _, _ = run_layers(
        params["layers"], embed_tokens(params, tokens, arch=arch), k, v, 0, kernel=XLA, arch=arch
    )
    return lm_logits(params, x, arch)
