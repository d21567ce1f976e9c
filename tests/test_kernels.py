"""The fused MLP kernel in Pallas interpret mode against its reference, the tile chooser, the
backend switch, and generations through the kernel in both executors."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpart.config import load_mesh, load_model, shipped
from jaxpart.engine import generate, random_prompts
from jaxpart.kernels import mlp as mlp_module
from jaxpart.kernels.mlp import (
    BlockSizes,
    KernelChoice,
    KernelFallbackError,
    choose_block_sizes,
    fused_mlp,
    mlp_reference,
)
from jaxpart.model import init_params

H100_SMEM = 227 * 1024


def random_mlp(m, d, f, dtype, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k[0], (m, d), jnp.float32).astype(dtype)
    w1 = (jax.random.normal(k[1], (d, f), jnp.float32) * d**-0.5).astype(dtype)
    w2 = (jax.random.normal(k[2], (f, d), jnp.float32) * f**-0.5).astype(dtype)
    return x, w1, w2


def relative_error(out, ref):
    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    return np.abs(out - ref).max() / np.abs(ref).max()


SHAPES = [(16, 128, 512), (37, 128, 512), (1, 128, 512), (5, 256, 1024), (64, 128, 64)]
MODEL_DIMS = [(load_model(str(p)).d_model, load_model(str(p)).d_ff) for p in shipped("models")]


@pytest.mark.parametrize("dtype, bound", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "m, d, f",
    SHAPES + [pytest.param(1, d, f, marks=pytest.mark.slow) for d, f in MODEL_DIMS],
)
def test_pallas_interpret_matches_reference(m, d, f, dtype, bound):
    x, w1, w2 = random_mlp(m, d, f, dtype)
    out = fused_mlp(x, w1, w2, backend="pallas", interpret=True, sram_bytes=H100_SMEM)
    ref = mlp_reference(x, w1, w2)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert np.isfinite(np.asarray(out, np.float32)).all()
    assert relative_error(out, ref) < bound


def test_ragged_rows_never_see_nan_padding():
    # 37 rows in tiles of 16: the last tile is ragged. Interpret mode would fill a partial block
    # with NaN; the wrapper pads rows with zeros itself, so every row, the last included, is
    # finite and right.
    x, w1, w2 = random_mlp(37, 128, 512, jnp.float32, seed=3)
    bs = BlockSizes(block_m=16, block_f=64, block_k=32, block_d=32)
    out = np.asarray(fused_mlp(x, w1, w2, backend="pallas", block_sizes=bs))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.asarray(mlp_reference(x, w1, w2)), rtol=1e-5, atol=1e-5)


def test_pallas_path_really_runs_the_kernel():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    text = str(jax.make_jaxpr(lambda a, b, c: fused_mlp(a, b, c, backend="pallas"))(x, w1, w2))
    assert "pallas_call" in text
    text = str(jax.make_jaxpr(lambda a, b, c: fused_mlp(a, b, c, backend="auto"))(x, w1, w2))
    assert "pallas_call" not in text, "auto means XLA on CPU"


def test_block_size_that_does_not_divide_is_an_error():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    with pytest.raises(ValueError, match="d_ff=512 must be a multiple of the block 1024"):
        fused_mlp(x, w1, w2, backend="pallas", block_sizes=BlockSizes(16, 1024, 32, 32))


@settings(max_examples=1000, deadline=None)
@given(
    m=st.integers(1, 4096),
    d=st.integers(1, 512).map(lambda k: 16 * k),
    f=st.integers(1, 2048).map(lambda k: 16 * k),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    sram=st.integers(1024, 1 << 20),
    stages=st.integers(1, 4),
)
def test_choose_block_sizes_fits_sram(m, d, f, dtype, sram, stages):
    nbytes = jnp.dtype(dtype).itemsize
    smallest = BlockSizes(16, 16, 16, 16, num_stages=stages).working_set_bytes(nbytes)
    if smallest > sram:
        with pytest.raises(ValueError, match=f"need {smallest} bytes, more than sram_bytes={sram}"):
            choose_block_sizes(m, d, f, dtype, sram, stages)
        return
    bs = choose_block_sizes(m, d, f, dtype, sram, stages)
    assert bs.working_set_bytes(nbytes) <= sram
    for block, dim in ((bs.block_f, f), (bs.block_k, d), (bs.block_d, d)):
        assert dim % block == 0 and block & (block - 1) == 0 and block >= 16
    assert 16 <= bs.block_m <= 64 and bs.block_m & (bs.block_m - 1) == 0


def test_h100_tiles_for_the_seed_model():
    bs = choose_block_sizes(16, 4096, 16384, jnp.bfloat16, H100_SMEM)
    assert bs.working_set_bytes(2) <= H100_SMEM
    assert bs.block_f >= 64, "wide F chunks keep the partial-sum traffic small"


def test_pallas_on_cpu_without_interpret_is_refused():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    with pytest.raises(KernelFallbackError, match="only in interpret mode"):
        fused_mlp(x, w1, w2, backend="pallas", interpret=False)


def test_fallback_warns_once_with_its_reason_and_strict_refuses():
    x, w1, w2 = random_mlp(4, 120, 240, jnp.float32)  # 120 is no multiple of 16
    mlp_module._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = fused_mlp(x, w1, w2, backend="pallas")
        out2 = fused_mlp(x, w1, w2, backend="pallas")
    messages = [str(w.message) for w in caught]
    assert messages == [
        "Pallas MLP kernel unavailable, using XLA: d_model=120 must be a multiple of 16 for the "
        "Pallas kernel"
    ]
    np.testing.assert_array_equal(out1, mlp_reference(x, w1, w2))
    np.testing.assert_array_equal(out2, out1)
    with pytest.raises(KernelFallbackError, match=re.escape("d_model=120 must be a multiple")):
        fused_mlp(x, w1, w2, backend="pallas", strict=True)


def test_unknown_backend():
    with pytest.raises(ValueError, match="--mlp-kernel = 'cuda'"):
        KernelChoice(backend="cuda")


@pytest.mark.parametrize("method", ["baseline", "layerwise"])
def test_generations_through_the_kernel_equal_xla(cpu16, method):
    cfg, mesh = load_model("dense16-tiny"), load_mesh("cpu16")
    params = init_params(cfg, 0)
    prompts = random_prompts(cfg, 16, 16, 7)
    runs = {}
    for backend in ("xla", "pallas"):
        kernel = KernelChoice(backend, sram_bytes=mesh.tiers["smem"].capacity_bytes, strict=True)
        runs[backend], _, _ = generate(
            method, cfg, mesh, prompts=prompts, gen_len=6, params=params, kernel=kernel
        )
    np.testing.assert_array_equal(runs["pallas"], runs["xla"])


@pytest.mark.slow
def test_bench_gpu_script_runs_on_cpu(tmp_path):
    # The GPU script's CPU smoke mode (interpret mode, tiny shapes): proves it is not broken.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_gpu.py"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "XLA_FLAGS")}
    proc = subprocess.run(
        [sys.executable, str(script), "--cpu", "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert doc["platform"] == "cpu" and doc["jax_version"] == jax.__version__
    assert {r["m"] for r in doc["mlp"]} == {8, 16}
    for row in doc["mlp"]:
        assert row["rel_error_vs_f32"] < 1e-2
        assert row["pallas"]["per_call_s"] > 0 and row["xla"]["bytes_per_s"] > 0
    assert doc["l2"]["fits_l2"]["effective_bytes_per_s"] > 0
    assert {(r["stage"], r["mlp_kernel"]) for r in doc["stage"]} == {
        ("layerwise", "xla"),
        ("layerwise", "pallas"),
        ("tp8_shard", "xla"),
        ("tp8_shard", "pallas"),
    }


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize(
    "m, d, f", [(16, d, f) for d, f in MODEL_DIMS] + [(8, d, f // 8) for d, f in MODEL_DIMS]
)
def test_kernel_lowers_to_triton_for_cuda(m, d, f, dtype):
    # No GPU here, but jax lowers for CUDA on any machine: that runs Pallas's Triton lowering,
    # which enforces Triton's rules (power-of-2 blocks, 2-D dots >= 16). PTX is not built.
    from jaxpart.kernels.mlp import _fused_mlp_pallas

    bs = choose_block_sizes(m, d, f, dtype, H100_SMEM)
    shapes = [jax.ShapeDtypeStruct(s, dtype) for s in ((m, d), (d, f), (f, d))]

    def run(x, w1, w2):
        return _fused_mlp_pallas(
            x, w1, w2, block_sizes=bs, interpret=False, out_dtype=jnp.dtype(dtype)
        )

    text = jax.jit(run).trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text.lower()
