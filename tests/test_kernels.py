"""The MLP kernels in Pallas interpret mode against their reference, the tile chooser, the
backend switch, the eviction hints, and generations through the kernel in both executors."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpart.config import RunShape, default_run, load_mesh, load_model, shipped
from jaxpart.model.decoder import init_params
from jaxpart.model.kernels import backend as backend_module
from jaxpart.model.kernels.backend import KernelChoice, KernelFallbackError
from jaxpart.model.kernels.mlp import (
    DECODE_ROWS,
    BlockSizes,
    choose_block_sizes,
    mlp,
    mlp_reference,
    programs,
)
from jaxpart.planning.placement import decode_shapes
from jaxpart.runtime.engine import generate, random_prompts

H100_SMEM = 227 * 1024
PALLAS = KernelChoice(mlp="pallas", sram_bytes=H100_SMEM)


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
# Interpret mode runs the grid one program at a time: up to the seed model's matrices.
INTERPRET_DIMS = sorted({(d, f) for d, f in MODEL_DIMS if d * f <= 4096 * 16384})


@pytest.mark.parametrize("dtype, bound", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "m, d, f",
    SHAPES + [pytest.param(1, d, f, marks=pytest.mark.slow) for d, f in INTERPRET_DIMS],
)
def test_pallas_interpret_matches_reference(m, d, f, dtype, bound):
    x, w1, w2 = random_mlp(m, d, f, dtype)
    out = mlp(x, w1, w2, kernel=PALLAS)
    ref = mlp_reference(x, w1, w2)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert np.isfinite(np.asarray(out, np.float32)).all()
    assert relative_error(out, ref) < bound


def test_ragged_rows_never_see_nan_padding():
    # 37 rows in tiles of 16: the last tile is ragged. Interpret mode would fill a partial block
    # with NaN; the wrapper pads rows with zeros itself, so every row, the last included, is
    # finite and right.
    x, w1, w2 = random_mlp(37, 128, 512, jnp.float32, seed=3)
    bs = BlockSizes(block_m=16, block_f=64, block_d=32, block_k=32)
    out = np.asarray(mlp(x, w1, w2, kernel=PALLAS, block_sizes=bs))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.asarray(mlp_reference(x, w1, w2)), rtol=1e-5, atol=1e-5)


def test_pallas_path_really_runs_the_kernel():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    text = str(jax.make_jaxpr(lambda a, b, c: mlp(a, b, c, kernel=PALLAS))(x, w1, w2))
    assert text.count("pallas_call") == 2, "the up and the down kernel"
    text = str(jax.make_jaxpr(lambda a, b, c: mlp(a, b, c, kernel=KernelChoice()))(x, w1, w2))
    assert "pallas_call" not in text, "auto means XLA on CPU"


def test_block_size_that_does_not_divide_is_an_error():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    with pytest.raises(ValueError, match="d_ff=512 must be a multiple of the block 1024"):
        mlp(x, w1, w2, kernel=PALLAS, block_sizes=BlockSizes(16, 1024, 32, 32))


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
    for block, dim in ((bs.block_f, f), (bs.block_k, d), (bs.block_k, f), (bs.block_d, d)):
        assert dim % block == 0 and block & (block - 1) == 0 and block >= 16
    assert 16 <= bs.block_m <= 64 and bs.block_m & (bs.block_m - 1) == 0


DECODE_SHAPES = [
    (s["model"], s["method"], s["rows"], s["d_model"], s["d_ff"])
    for s in decode_shapes(
        [(load_model(str(p)), default_run(str(p))) for p in shipped("models")], load_mesh("h100x16")
    )
]


@pytest.mark.parametrize("name, method, m, d, f", DECODE_SHAPES)
def test_every_sm_gets_a_program_where_the_matrix_allows(name, method, m, d, f):
    # Each program owns its output tile: no partial sums at all (0% extra weight traffic). The
    # count reaches the SMs unless the matrix has fewer 16-wide tiles than SMs, the documented
    # exception (module docstring).
    bs = choose_block_sizes(m, d, f, jnp.bfloat16, H100_SMEM, sm_count=132)
    assert bs.working_set_bytes(2) <= H100_SMEM
    count = programs(m, d, f, bs)
    assert count["up"] >= 132 or bs.block_f == 16
    assert count["down"] >= 132 or bs.block_d == 16
    assert count["up"] >= min(132, f // 16) and count["down"] >= min(132, d // 16)


def test_decode_shapes_cover_every_shipped_model():
    names = {(n, m) for n, m, *_ in DECODE_SHAPES}
    assert ("dense16", "baseline") in names and ("dense16-l2", "layerwise") in names
    assert {r for _, _, r, _, _ in DECODE_SHAPES} >= {8, 64}


def test_pallas_on_cpu_without_interpret_is_refused():
    x, w1, w2 = random_mlp(4, 128, 512, jnp.float32)
    with pytest.raises(KernelFallbackError, match="only in interpret mode"):
        mlp(x, w1, w2, kernel=KernelChoice(mlp="pallas", interpret=False))


def test_fallback_warns_once_with_its_reason_and_strict_refuses():
    x, w1, w2 = random_mlp(4, 120, 240, jnp.float32)  # 120 is no multiple of 16
    backend_module._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = mlp(x, w1, w2, kernel=PALLAS)
        out2 = mlp(x, w1, w2, kernel=PALLAS)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "Pallas MLP kernel unavailable, using XLA: d_model=120 must be a multiple of 16 for the "
        "Pallas kernel"
    ]
    np.testing.assert_array_equal(out1, mlp_reference(x, w1, w2))
    np.testing.assert_array_equal(out2, out1)
    with pytest.raises(KernelFallbackError, match=re.escape("d_model=120 must be a multiple")):
        mlp(x, w1, w2, kernel=KernelChoice(mlp="pallas", strict=True))


def test_unknown_backend():
    with pytest.raises(ValueError, match="--mlp-kernel = 'cuda'"):
        KernelChoice(mlp="cuda")
    with pytest.raises(ValueError, match="--attention = 'flash'"):
        KernelChoice(attention="flash")


def test_auto_sends_prefill_rows_to_xla_on_gpu():
    # Lowered for CUDA: decode-sized inputs run the kernels, a prompt's rows run XLA's GEMMs.
    gpu = KernelChoice(platform="gpu", interpret=False)
    for rows, kernels in ((DECODE_ROWS, 2), (DECODE_ROWS + 1, 0)):
        x, w1, w2 = random_mlp(rows, 128, 512, jnp.bfloat16)
        text = str(jax.make_jaxpr(lambda a, b, c: mlp(a, b, c, kernel=gpu))(x, w1, w2))
        assert text.count("pallas_call") == kernels


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        sub = getattr(value, "jaxpr", value)
        if hasattr(sub, "eqns"):
            yield sub


def _load_policies(jaxpr) -> list[list[str]]:
    """The eviction policy of every load, one list per pallas_call (walking nested jaxprs)."""
    kernels = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            policies, stack = [], [eqn.params["jaxpr"]]
            while stack:
                for e in stack.pop().eqns:
                    if e.primitive.name in ("load", "masked_load"):
                        policies.append(e.params.get("eviction_policy"))
                    stack.extend(_sub_jaxprs(e))
            kernels.append(sorted(str(p) for p in policies))
        else:
            for sub in _sub_jaxprs(eqn):
                kernels.extend(_load_policies(sub))
    return kernels


def test_weights_are_loaded_evict_last_and_activations_evict_first():
    # The hints are invisible in the printed jaxpr and in the Triton bytecode of a CUDA
    # lowering, so walk the pallas_call equations: each kernel loads one activation tile
    # (evict_first) and one weight tile (evict_last) per contraction step, and nothing else.
    x, w1, w2 = random_mlp(16, 128, 512, jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda a, b, c: mlp(a, b, c, kernel=PALLAS))(x, w1, w2).jaxpr
    assert _load_policies(jaxpr) == [["evict_first", "evict_last"]] * 2


def test_generations_through_the_kernels_equal_xla_in_every_placement(cpu16):
    # Pallas MLP and attention (interpret mode) against XLA, in the reference, TP8xPP2 and
    # layer-wise: identical float32 tokens, all six runs.
    cfg, mesh = load_model("dense16-tiny"), load_mesh("cpu16")
    params = init_params(cfg, 0)
    shape = RunShape(16, 16, 6)
    prompts = random_prompts(cfg, shape, 7)
    runs = {}
    for method in ("reference", "baseline", "layerwise"):
        for backend in ("xla", "pallas"):
            kernel = KernelChoice(
                mlp=backend,
                attention=backend,
                sram_bytes=mesh.tiers["smem"].capacity_bytes,
                strict=True,
            )
            runs[method, backend], _, _ = generate(
                method, cfg, mesh, shape, prompts=prompts, params=params, kernel=kernel
            )
    for key, tokens in runs.items():
        np.testing.assert_array_equal(tokens, runs["reference", "xla"], err_msg=str(key))


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
    assert doc["launch"]["per_launch_s"] > 0
    assert {r["rows"] for r in doc["mlp"]} == {8, 16}
    for row in doc["mlp"]:
        assert row["rel_error_vs_f32"] < 1e-2
        assert row["pallas"]["per_call_s"] > 0 and row["xla"]["bytes_per_s"] > 0
    assert {r["rows"] for r in doc["mlp_fp8"]} == {8, 16}
    for row in doc["mlp_fp8"]:  # the FP8 tiles against XLA's FP8 GEMMs
        assert row["rel_error_vs_xla_fp8"] < 1e-2 and row["pallas"]["per_call_s"] > 0
    attention = doc["attention"]
    assert attention["pallas"]["rel_error"] < 1e-2 and attention["xla"]["rel_error"] < 1e-2
    assert doc["l2"]["with_hints"]["effective_bytes_per_s"] > 0
    assert doc["l2"]["fits_l2"]["effective_bytes_per_s"] > 0  # what --calibration reads
    assert {(r["method"], r["kernels"]) for r in doc["stage"]} == {
        ("layerwise", "xla"),
        ("layerwise", "pallas"),
        ("baseline", "xla"),
        ("baseline", "pallas"),
    }


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize(
    "m, d, f", [(16, d, f) for d, f in MODEL_DIMS] + [(8, d, f // 8) for d, f in MODEL_DIMS]
)
def test_kernel_lowers_to_triton_for_cuda(m, d, f, dtype):
    # No GPU here, but jax lowers for CUDA on any machine: that runs Pallas's Triton lowering,
    # which enforces Triton's rules (power-of-2 blocks, 2-D dots >= 16). PTX is not built.
    from jaxpart.model.kernels.mlp import _mlp_pallas

    bs = choose_block_sizes(m, d, f, dtype, H100_SMEM)
    # A stack of 3 layers (a padded stage need not hold a power of 2), layer 1 used.
    shapes = [jax.ShapeDtypeStruct(s, dtype) for s in ((m, d), (3, d, f), (3, f, d))]

    def run(x, w1, w2):
        return _mlp_pallas(
            x,
            w1,
            w2,
            jnp.ones((1,), jnp.int32),
            block_sizes=bs,
            interpret=False,
            out_dtype=jnp.dtype(dtype),
        )

    text = jax.jit(run).trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text.lower()
