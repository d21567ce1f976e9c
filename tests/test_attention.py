"""Attention kernels (Pallas in interpret mode, and the length-aware XLA paths) against their
references; that decode never reads past the filled blocks; lowering for CUDA."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpart.model.kernels.attention import (
    decode_attention,
    decode_attention_reference,
    decode_splits,
    prefill_attention,
    prefill_attention_reference,
)
from jaxpart.model.kernels.backend import KernelChoice, KernelFallbackError
from jaxpart.planning.memory import KV_BLOCK, cache_positions

BOUNDS = [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)]
BACKENDS = ["pallas", "xla"]


def normal(shape, dtype, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


def relative_error(out, ref):
    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    return np.abs(out - ref).max() / np.abs(ref).max()


def cache(seq_len, dtype, heads=2, layers=3, batch=6, head_dim=16, seed=0):
    shape = (heads, layers, batch, cache_positions(seq_len), head_dim)
    return normal(shape, dtype, seed), normal(shape, dtype, seed + 1)


@pytest.mark.parametrize("dtype, bound", BOUNDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seq_len", [64, 300])
def test_decode_matches_reference_at_every_length(dtype, bound, backend, seq_len):
    # Rows of one call at different lengths: position 0 (length 1), the middle, and the last
    # position of the context (length seq_len), with 4 query heads over 2 K/V heads.
    k, v = cache(seq_len, dtype)
    q = normal((3, 4, 16), dtype, 7)
    new = normal((2, 2, 3, 16), dtype, 8)  # K and V: [H_kv, b, head_dim] each
    lengths = jnp.array([1, seq_len // 2 + 3, seq_len], jnp.int32)
    for pos in (0, seq_len - 1):  # written at the first and at the last position
        args = (q, new[0], new[1], k, v, 2, 3, pos, lengths)
        out, k_out, v_out = decode_attention(*args, kernel=KernelChoice(attention=backend))
        ref, k_ref, v_ref = decode_attention_reference(*args)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert relative_error(out, ref) < bound
        np.testing.assert_array_equal(k_out, k_ref)
        np.testing.assert_array_equal(v_out, v_ref)


def test_decode_writes_only_its_position():
    k, v = cache(64, jnp.float32)
    new = normal((2, 2, 3, 16), jnp.float32, 8)
    q = normal((3, 4, 16), jnp.float32, 7)
    _, k_out, _ = decode_attention(q, new[0], new[1], k, v, 1, 2, 9, kernel=KernelChoice())
    changed = np.argwhere(np.asarray(k_out != k))
    assert {tuple(i) for i in changed[:, 1:4]} == {(1, 2, 9), (1, 3, 9), (1, 4, 9)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_never_reads_past_the_filled_blocks(backend):
    # Every block after the one holding the last position is NaN. A kernel that read it, even
    # under a mask, would return NaN (0 x NaN); one that stops at the length returns the
    # reference computed on a clean cache.
    seq_len, length = 1000, 200
    k, v = cache(seq_len, jnp.float32)
    q = normal((2, 4, 16), jnp.float32, 3)
    new = normal((2, 2, 2, 16), jnp.float32, 4)
    first_unused = -(-length // KV_BLOCK) * KV_BLOCK
    poisoned = [x.at[:, :, :, first_unused:].set(jnp.nan) for x in (k, v)]
    lengths = jnp.array([length, length - 150], jnp.int32)
    pos = length - 1
    choice = KernelChoice(attention=backend)
    out, _, _ = decode_attention(q, *new, *poisoned, 1, 0, pos, lengths, kernel=choice)
    ref, _, _ = decode_attention_reference(q, *new, k, v, 1, 0, pos, lengths)
    assert np.isfinite(np.asarray(out)).all()
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("dtype, bound", BOUNDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t", [1, 5, 16, 37, 200])
def test_prefill_matches_reference(dtype, bound, backend, t):
    q = normal((2, t, 4, 16), dtype, 1)
    k, v = normal((2, t, 2, 16), dtype, 2), normal((2, t, 2, 16), dtype, 3)
    out = prefill_attention(q, k, v, KernelChoice(attention=backend))
    ref = prefill_attention_reference(q, k, v)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert relative_error(out, ref) < bound


@pytest.mark.parametrize("window", [1, 7, 150])
def test_a_sliding_window_matches_its_reference_and_reads_only_the_window(window):
    # Decode (XLA, the path a window runs) at rows of different lengths: every block before the
    # earliest row's window is NaN, so reading it, even under a mask, would show.
    seq_len = 1000
    k, v = cache(seq_len, jnp.float32)
    q = normal((2, 4, 16), jnp.float32, 3)
    new = normal((2, 2, 2, 16), jnp.float32, 4)
    lengths = jnp.array([700, 650], jnp.int32)
    first_used = (650 - window) // 32 * 32  # the CPU path reads blocks of XLA_CPU_BLOCK = 32
    poisoned = [x.at[:, :, :, :first_used].set(jnp.nan) for x in (k, v)]
    args = (1, 0, 699, lengths)
    out, _, _ = decode_attention(q, *new, *poisoned, *args, kernel=KernelChoice(), window=window)
    ref, _, _ = decode_attention_reference(q, *new, k, v, *args, window=window)
    full, _, _ = decode_attention_reference(q, *new, k, v, *args)
    assert np.isfinite(np.asarray(out)).all() and relative_error(out, ref) < 1e-5
    assert relative_error(ref, full) > 1e-3  # the window changes the answer
    # Prefill: a query sees its last `window` keys, its own included.
    t = 40
    qp = normal((2, t, 4, 16), jnp.float32, 1)
    kp, vp = normal((2, t, 2, 16), jnp.float32, 2), normal((2, t, 2, 16), jnp.float32, 3)
    got = prefill_attention(qp, kp, vp, KernelChoice(attention="xla"), window=window)
    want = prefill_attention_reference(qp, kp, vp, window=window)
    assert relative_error(got, want) < 1e-5
    if window < t:  # a key older than the window changes nothing
        later = prefill_attention(
            qp, kp.at[:, 0].set(9.0), vp.at[:, 0].set(-9.0), KernelChoice(attention="xla"), window
        )
        np.testing.assert_array_equal(np.asarray(later)[:, window:], np.asarray(got)[:, window:])


def test_a_window_runs_the_xla_path_with_a_warning():
    k, v = cache(64, jnp.float32)
    q = normal((3, 4, 16), jnp.float32, 7)
    new = normal((2, 2, 3, 16), jnp.float32, 8)
    strict = KernelChoice(attention="pallas", strict=True)
    with pytest.raises(KernelFallbackError, match="sliding window of 8"):
        decode_attention(q, *new, k, v, 1, 2, 30, kernel=strict, window=8)
    # a window no shorter than the cache is full attention: the Pallas kernel runs it
    decode_attention(q, *new, k, v, 1, 2, 30, kernel=KernelChoice(attention="pallas"), window=64)


def test_prefill_is_causal():
    # Changing a later key or value changes no earlier position's output.
    q, k, v = (normal((1, 12, 2, 16), jnp.float32, s) for s in (1, 2, 3))
    for backend in BACKENDS:
        choice = KernelChoice(attention=backend)
        base = np.asarray(prefill_attention(q, k, v, choice))
        later = np.asarray(prefill_attention(q, k.at[:, 7].set(9.0), v.at[:, 7].set(-9.0), choice))
        np.testing.assert_array_equal(later[:, :7], base[:, :7])
        assert not np.allclose(later[:, 7:], base[:, 7:])


def test_decode_splits_divide_the_context():
    for seq_len in (16, 64, 100, 1000, 1025, 10000, 32768):
        blocks = max(1, cache_positions(seq_len) // KV_BLOCK)
        splits = decode_splits(blocks)
        assert blocks % splits == 0 and 1 <= splits <= 16
    assert decode_splits(cache_positions(10000) // KV_BLOCK) == 16  # 80 blocks, 5 a split


def test_cache_positions_are_whole_pages_and_pad_little():
    for seq_len in range(1, 20000, 37):
        n = cache_positions(seq_len)
        assert n >= seq_len and n % 16 == 0
        if seq_len > KV_BLOCK:
            assert n % KV_BLOCK == 0 and n - seq_len < 4 * KV_BLOCK


def test_pallas_on_cpu_without_interpret_is_refused():
    k, v = cache(64, jnp.float32)
    q, new = normal((1, 4, 16), jnp.float32, 1), normal((2, 1, 16), jnp.float32, 2)
    with pytest.raises(KernelFallbackError, match="only in interpret mode"):
        choice = KernelChoice(attention="pallas", interpret=False)
        decode_attention(q, new, new, k, v, 0, 0, 5, kernel=choice)


def test_a_prompt_must_start_at_position_zero():
    from jaxpart.model.layers import attention

    p = {n: jnp.ones((8, 2, 4)) for n in ("wq", "wk", "wv")}
    k, v = cache(64, jnp.float32, heads=2, layers=1, batch=1, head_dim=4)
    with pytest.raises(ValueError, match=re.escape("must start at position 0, not 3")):
        attention(p, jnp.ones((1, 5, 8)), k, v, 3)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_kernels_lower_for_cuda(dtype):
    # No GPU needed: lowering for CUDA runs Pallas's Triton lowering (Triton's rules enforced).
    gpu = KernelChoice(platform="gpu", interpret=False)
    seq = cache_positions(10000)
    kc = jax.ShapeDtypeStruct((32, 2, 64, seq, 128), dtype)
    q = jax.ShapeDtypeStruct((8, 32, 128), dtype)
    new = jax.ShapeDtypeStruct((32, 8, 128), dtype)
    pos = jax.ShapeDtypeStruct((), jnp.int32)

    def decode(q, k_new, k, v, pos):
        return decode_attention(q, k_new, k_new, k, v, 1, 8, pos, kernel=gpu)[0]

    lowered = jax.jit(decode).trace(q, new, kc, kc, pos).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "triton" in text.lower()
    # The cache goes to the kernel whole: no slice or transpose of it exists in the program.
    assert f"{seq}x128x" not in text.replace(f"32x2x64x{seq}x128x", "")
    prompt = jax.ShapeDtypeStruct((1, 300, 32, 128), dtype)
    text = (
        jax.jit(lambda q, k, v: prefill_attention(q, k, v, gpu))
        .trace(prompt, prompt, prompt)
        .lower(lowering_platforms=("cuda",))
        .as_text()
    )
    assert "triton" in text.lower()
