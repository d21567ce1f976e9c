"""FP8: the three checkpoint formats read from config.json, the e4m3 GEMMs and the FP8 KV cache
against numpy's arithmetic, FP8 folders generating in every placement within the measured
tolerance of their dequantised float32 model, ``--quantize fp8`` on a 16-bit folder, and
``verify`` of llama3.1-70b-fp8 against the memory model."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import tiny_checkpoints as tiny

from jaxpart.cli.main import main
from jaxpart.config import ConfigError, RunShape, load_mesh, load_model
from jaxpart.config.quant import FP8_MAX, Fp8Scheme, parse_quantization, scale_bytes
from jaxpart.measure.agreement import FP8_DEQUANTIZED_TOLERANCE, agree
from jaxpart.model import quant
from jaxpart.model.decoder import dequantize_params, init_params, quantize_params
from jaxpart.planning.memory import layer_weight_bytes

F8 = ml_dtypes.float8_e4m3fn


# -- formats -----------------------------------------------------------------------------------


def test_each_format_is_read_as_its_code_defines_it():
    ct, kv = parse_quantization(tiny.FP8_FORMATS["ct-channel"], "c.json")
    assert (ct.format, ct.weights, ct.activations, kv) == (
        "compressed-tensors",
        "channel",
        "token",
        False,
    )
    static, kv = parse_quantization(tiny.FP8_FORMATS["ct-static"], "c.json")
    assert (static.weights, static.activations, kv) == ("tensor", "tensor", True)
    assert static.ignores("model.layers.3.mlp.down_proj")
    assert not static.ignores("model.layers.13.mlp.down_proj")
    fb, _ = parse_quantization(tiny.FP8_FORMATS["fbgemm"], "c.json")
    assert (fb.weights, fb.activations, fb.scale_ub) == ("channel", "token", 1200.0)
    assert fb.scale_floor == pytest.approx(1 / (448 * 512))
    fg, _ = parse_quantization(tiny.FP8_FORMATS["fine-grained"], "c.json")
    assert (fg.weights, fg.activations, fg.block, fg.group) == ("block", "group", (32, 32), 32)


@pytest.mark.parametrize(
    "qc, words",
    [
        ({"quant_method": "gptq", "bits": 4}, "'gptq'"),
        ({"quant_method": "fp8", "activation_scheme": "static"}, "dynamic activation scales"),
        ({"quant_method": "fp8", "weight_block_size": [128]}, "[rows, columns]"),
        ({"quant_method": "compressed-tensors", "config_groups": {}}, "one quantisation group"),
        ("fp8", "expected a table"),
    ],
)
def test_other_methods_are_one_line_errors(qc, words):
    with pytest.raises(ConfigError) as e:
        parse_quantization(qc, "config.json")
    assert words in str(e.value) and "\n" not in str(e.value)
    assert "config.json: field 'quantization_config" in str(e.value)


def test_a_gptq_folder_is_refused_in_one_line(tmp_path, capsys):
    folder = tiny.write_checkpoint(tmp_path / "m", "llama-tiny-untied")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["generate", "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'awq'" in err and len(err.splitlines()) == 1


# -- arithmetic --------------------------------------------------------------------------------


def _e4m3(x):
    return np.clip(x, -FP8_MAX, FP8_MAX).astype(F8).astype(np.float32)


def _numpy_gemm(x, w, sw, scheme, in_scale=None):
    """The formats' arithmetic in numpy: activations quantised, e4m3 products, f32 sums."""
    w = w.astype(np.float32)
    if scheme.activations == "none":
        full = np.repeat(sw, w.shape[0] // sw.shape[0], 0) if sw.ndim == 2 else sw[None]
        return x @ (w * full)
    groups = sw.shape[0] if sw.ndim == 2 else 1
    xg = x.reshape(x.shape[0], groups, -1)
    if scheme.activations == "tensor":
        sx = np.full(xg.shape[:2], in_scale, np.float32)
    else:
        amax = np.abs(xg).max(-1)
        if scheme.scale_ub:
            amax = np.minimum(amax, scheme.scale_ub)
        sx = np.maximum(amax / FP8_MAX, scheme.scale_floor)
    xq = _e4m3(xg / sx[..., None])
    wg = w.reshape(groups, -1, w.shape[1])
    parts = np.einsum("mgc,gcn->mgn", xq, wg)
    swg = sw if sw.ndim == 2 else sw[None]
    return (parts * sx[..., None] * swg[None]).sum(1)


@pytest.mark.parametrize(
    "scheme, blocks",
    [
        (Fp8Scheme(), False),
        (Fp8Scheme("fbgemm_fp8", scale_ub=2.0, scale_floor=1 / (448 * 512)), False),
        (Fp8Scheme("compressed-tensors", "tensor", "tensor"), False),
        (Fp8Scheme("compressed-tensors", "channel", "none"), False),
        (Fp8Scheme("fp8", "block", "group", (16, 16)), True),
    ],
)
def test_fp8_gemm_is_the_formats_arithmetic(scheme, blocks):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 64)) * 3).astype(np.float32)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    shape = (4, 48) if blocks else (48,)
    wq, sw = quant.quantize_leaf(w, 1, shape)
    in_scale = np.float32(0.02)
    got = quant.fp8_matmul(jnp.asarray(x), jnp.asarray(wq), jnp.asarray(sw), scheme, in_scale)
    want = _numpy_gemm(x, np.asarray(wq), sw, scheme, in_scale)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-4)
    # and, where no cap clips the activations, close to the 16-bit product: e4m3's error
    if not scheme.scale_ub:
        exact = x @ w
        assert np.abs(np.asarray(got) - exact).max() < 0.1 * np.abs(exact).max()


def test_a_block_gemm_that_loops_over_its_groups_gives_the_same(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    wq, sw = quant.quantize_leaf(rng.standard_normal((64, 32)), 1, (4, 32))
    scheme = Fp8Scheme("fp8", "block", "group", (16, 16))
    batched = quant.fp8_matmul(jnp.asarray(x), jnp.asarray(wq), jnp.asarray(sw), scheme)
    monkeypatch.setattr(quant, "GROUPED_BYTES", 0)
    looped = quant.fp8_matmul(jnp.asarray(x), jnp.asarray(wq), jnp.asarray(sw), scheme)
    np.testing.assert_allclose(np.asarray(looped), np.asarray(batched), rtol=1e-6, atol=1e-6)


def test_the_fp8_cache_stores_scaled_bytes_and_saturates():
    k = jnp.asarray([[1.0, -3.0, 1000.0], [0.5, 0.25, -0.125]], jnp.float32)
    scale = jnp.asarray([0.5, 2.0])
    stored = quant.kv_store(k, scale, None)
    assert stored.dtype == quant.FP8_CACHE
    back = np.asarray(quant.kv_load(stored, scale, jnp.float32))
    np.testing.assert_allclose(back[0, :2], [1.0, -3.0])
    assert back[0, 2] == FP8_MAX * 0.5  # 2000 is past e4m3's range: saturated, not NaN
    np.testing.assert_allclose(back[1], [0.5, 0.25, -0.125])


def test_quantised_weights_dequantise_to_within_e4m3s_precision():
    cfg = load_model("gqa-tiny").quantized()
    wide = init_params(load_model("gqa-tiny").with_dtype("float32"), 0)
    params = quantize_params(wide, cfg)
    back = dequantize_params(params, cfg)
    for name in ("wq", "wk", "wo", "w1", "w2"):
        w = np.asarray(wide["layers"][name], np.float32)
        assert params["layers"][name].dtype == F8
        # e4m3 keeps 3 mantissa bits: a relative error of at most 2^-4, near the channel's max
        err = np.abs(back["layers"][name] - w).max()
        assert 0 < err <= np.abs(w).max() * 2**-4


# -- checkpoints -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    out = {}
    for fmt in tiny.FP8_FORMATS:
        folder = tiny.write_fp8_checkpoint(root / fmt, fmt)
        out[fmt] = (folder, tiny.dequantized(folder, root / f"{fmt}-deq"))
    return out


@pytest.mark.parametrize("fmt", list(tiny.FP8_FORMATS))
def test_the_loader_gives_the_checkpoints_values_and_scales(folders, fmt):
    """Each canonical FP8 leaf times its canonical scales is the numpy-dequantised checkpoint
    in jaxpart's layout: scales reshaped, blocks expanded, wo's per head."""
    from jaxpart.io.weights import load_hf_params
    from jaxpart.model.decoder import abstract_params

    fp8, deq = folders[fmt]
    cfg = load_model(str(fp8))
    got = dequantize_params(load_hf_params(fp8, cfg, abstract_params(cfg)), cfg)
    wide = load_model(str(deq))
    want = load_hf_params(deq, wide, abstract_params(wide))
    for name, w in want["layers"].items():
        g = got["layers"][name]
        if fmt == "ct-static" and name == "w2":  # layer 3's is ignored: 16-bit, quantised here
            assert 0 < np.abs(g[3] - w[3]).max() <= np.abs(w[3]).max() * 2**-4
            g, w = np.delete(g, 3, 0), np.delete(w, 3, 0)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=name)


def test_fp8_memory_counts_scales_and_keeps_the_embedding_16_bit():
    wide = load_model("llama3.1-70b")
    fp8 = load_model("llama3.1-70b-fp8")
    assert fp8.quant is not None and fp8.embed_bytes_each == 2
    # half the matrices' bytes, plus an f32 scale per output channel
    assert layer_weight_bytes(fp8, 8) == layer_weight_bytes(wide, 8) // 2 + scale_bytes(fp8, 8)
    assert 0 < scale_bytes(fp8, 8) < layer_weight_bytes(fp8, 8) / 1000


def test_quantize_refuses_a_model_that_is_fp8_already(capsys):
    assert main(["plan", "--model", "llama3.1-70b-fp8", "--quantize", "fp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already has FP8 weights" in err and len(err.splitlines()) == 1


def test_plan_takes_quantize():
    assert main(["plan", "--model", "llama3.1-70b", "--mesh", "h100x16", "--quantize", "fp8"]) == 0


# -- running (slow: compiles) ------------------------------------------------------------------

SHAPE = RunShape(batch=16, prompt_len=8, gen_len=tiny.GEN_LEN)
PROMPTS = np.asarray(tiny.PROMPTS * 8, np.int32)


def _forced(method, cfg, tokens):
    from jaxpart.runtime.engine import make_executor, model_params

    executor = make_executor(method, cfg, load_mesh("cpu16"), SHAPE)
    placed = executor.place(model_params(cfg, 0))
    return executor.teacher_forced(placed, PROMPTS, tokens)


@pytest.mark.parametrize("fmt", list(tiny.FP8_FORMATS))
def test_fp8_folders_run_in_every_placement_as_their_dequantised_model(folders, fmt):
    """The dequantised float32 folder generates greedily; each placement of the FP8 folder,
    teacher-forced on those tokens, chooses differently only where its own two logits are
    within the measured FP8 tolerance (agreement.FP8_DEQUANTIZED_TOLERANCE)."""
    from jaxpart.runtime.engine import make_executor, model_params

    fp8, deq = folders[fmt]
    wide = load_model(str(deq))
    ref = make_executor("reference", wide, load_mesh("cpu16"), SHAPE)
    placed = ref.place(model_params(wide, 0))
    tokens, _ = ref.generate(placed, PROMPTS)
    exact = ref.teacher_forced(placed, PROMPTS, tokens)
    cfg = load_model(str(fp8)).with_dtype("float32")
    for method in ("reference", "baseline", "layerwise"):
        result = agree(
            method, cfg.precision, exact, _forced(method, cfg, tokens), FP8_DEQUANTIZED_TOLERANCE
        )
        assert result.ok, result
        assert result.agreement >= 0.75, result
        assert 0 < result.max_logit_delta <= FP8_DEQUANTIZED_TOLERANCE, result


@pytest.mark.parametrize("method", ["reference", "baseline", "layerwise"])
def test_quantize_fp8_halves_the_weights_held(tmp_path, method, capsys):
    folder = tiny.write_checkpoint(tmp_path / "bf16", "llama-tiny-untied", bf16=True)
    runs = {}
    for extra in ([], ["--quantize", "fp8"]):
        out = tmp_path / f"{len(extra)}.json"
        args = ["generate", "--model", str(folder), "--method", method, "--batch", "16"]
        if method == "layerwise":  # the same plan for both (FP8 fits more layers a stage)
            args += ["--strategy", "manual", "--layers-per-stage", "8,8", "--capacity", "hbm"]
        assert main([*args, "--json", str(out), *extra]) == 0
        runs[bool(extra)] = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "quantised to FP8 per output channel as read" in text
    fp8, wide = runs[True], runs[False]
    assert "per-channel" in fp8["quantization"]
    # the layers' matrices held in half the bytes; the embedding, head and norms (copied on
    # every device of a placement) as they were; the scales beside the matrices in the share
    # the memory model gives them at the plan's tensor split (under a split, each rank holds
    # the whole rows of o_proj's and down_proj's output scales)
    held, was = fp8["weights_held_bytes"], wide["weights_held_bytes"]
    assert held["matrices"] * 2 == was["matrices"] and was["scales"] == 0
    assert held["rest"] == was["rest"]
    cfg = load_model(str(folder)).quantized()
    split = fp8["plan"]["split"] if fp8["plan"] else 1
    scales = scale_bytes(cfg, split)
    matrices = layer_weight_bytes(cfg, split) - scales
    assert held["scales"] * matrices == held["matrices"] * scales
    # a 16-bit checkpoint is read once, whole, either way
    assert fp8["weights_read_bytes_per_process"] == wide["weights_read_bytes_per_process"]


def test_compare_checks_an_fp8_model(folders, tmp_path):
    out = tmp_path / "c.json"
    fp8, _ = folders["fine-grained"]
    assert main(["compare", "--model", str(fp8), "--repeats", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [a["dtype"] for a in doc["agreement"]] == ["float8_e4m3fn"] * 2
    assert all(a["faults"] == 0 for a in doc["agreement"])


def test_verify_compiles_llama31_70b_fp8_as_the_memory_model_says(tmp_path):
    out = tmp_path / "v.json"
    assert main(["verify", "--model", "llama3.1-70b-fp8", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert abs(doc["predicted_over_xla_peak"] - 1) <= 0.10, doc["predicted_over_xla_peak"]
    assert doc["predicted_state_over_xla"] == pytest.approx(1.0, abs=0.01)


def test_the_fp8_cache_runs_in_the_placements_with_16_bit_weights():
    """A bf16 model with an FP8 KV cache (--kv-dtype): the placements agree with its
    reference within the FP8 tolerance."""
    cfg = load_model("gqa-tiny").replace(kv_dtype="float8_e4m3fn")
    params = init_params(cfg, 0)
    assert params["layers"]["k_scale"].shape == (cfg.n_layers, cfg.n_kv_heads)
    from jaxpart.runtime.engine import make_executor

    mesh = load_mesh("cpu16")
    ref = make_executor("reference", cfg, mesh, SHAPE)
    placed = ref.place(params)
    tokens, _ = ref.generate(placed, PROMPTS % cfg.vocab)
    exact = ref.teacher_forced(placed, PROMPTS % cfg.vocab, tokens)
    for method in ("baseline", "layerwise"):
        executor = make_executor(method, cfg, mesh, SHAPE)
        forced = executor.teacher_forced(executor.place(params), PROMPTS % cfg.vocab, tokens)
        assert agree(method, cfg.precision, exact, forced).ok


# -- the Pallas MLP on FP8 tiles -------------------------------------------------------------


def _fp8_mlp_stacks(layers=3, d=64, f=128, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in (("w1", (d, f)), ("w3", (d, f)), ("w2", (f, d))):
        parts = [
            quant.quantize_leaf(rng.standard_normal(shape) / 8, 1, shape[1:]) for _ in range(layers)
        ]
        out[name] = jnp.asarray(np.stack([q for q, _ in parts]))
        out[f"{name}_scale"] = jnp.asarray(np.stack([sc for _, sc in parts]))
    return out


@pytest.mark.parametrize("gated", [True, False])
def test_the_pallas_mlp_runs_fp8_tiles_as_xla_does(gated):
    """Interpret mode: e4m3 tiles, f32 accumulators scaled by the rows' and columns' scales,
    the same numbers as the XLA path's FP8 GEMMs."""
    from jaxpart.model.kernels.backend import KernelChoice
    from jaxpart.model.kernels.mlp import mlp

    stacks = _fp8_mlp_stacks()
    scales = {k: v for k, v in stacks.items() if "scale" in k and (gated or "w3" not in k)}
    x = jnp.asarray(np.random.default_rng(1).standard_normal((5, 64)), jnp.float32)
    w3 = stacks["w3"] if gated else None
    out = {}
    for backend in ("xla", "pallas"):
        choice = KernelChoice(mlp=backend, strict=True)
        out[backend] = mlp(
            x,
            stacks["w1"],
            stacks["w2"],
            w3=w3,
            layer=1,
            kernel=choice,
            quant=Fp8Scheme(),
            scales=scales,
        )
    np.testing.assert_allclose(
        np.asarray(out["pallas"]), np.asarray(out["xla"]), rtol=1e-5, atol=1e-5
    )


def test_block_scales_keep_the_pallas_mlp_on_xla_with_one_line():
    from jaxpart.model.kernels.backend import KernelChoice, KernelFallbackError
    from jaxpart.model.kernels.mlp import mlp

    stacks = _fp8_mlp_stacks()
    scheme = Fp8Scheme("fp8", "block", "group", (16, 16))
    with pytest.raises(KernelFallbackError, match="FP8 block scales"):
        mlp(
            jnp.zeros((2, 64)),
            stacks["w1"],
            stacks["w2"],
            layer=0,
            kernel=KernelChoice(mlp="pallas", strict=True),
            quant=scheme,
            scales={"w1_scale": stacks["w1_scale"][:, None], "w2_scale": stacks["w2_scale"]},
        )


def test_the_fp8_pallas_mlp_lowers_to_triton_for_cuda():
    """Pallas's Triton lowering takes the e4m3 tiles and their dot (PTX is not built here)."""
    from jaxpart.model.kernels.mlp import _mlp_pallas, choose_block_sizes

    m, d, f = 64, 8192, 3584
    bs = choose_block_sizes(m, d, f, jnp.float8_e4m3fn, 232_448, gated=True)
    s = jax.ShapeDtypeStruct
    f8 = jnp.float8_e4m3fn
    scales = {"w1_scale": s((3, f), jnp.float32), "w3_scale": s((3, f), jnp.float32)}
    scales["w2_scale"] = s((3, d), jnp.float32)

    def run(x, w1, w2, w3, scales):
        return _mlp_pallas(
            x,
            w1,
            w2,
            jnp.ones((1,), jnp.int32),
            w3,
            scales,
            block_sizes=bs,
            interpret=False,
            out_dtype=jnp.dtype(jnp.float32),
            quant=Fp8Scheme(),
        )

    args = (s((m, d), jnp.bfloat16), s((3, d, f), f8), s((3, f, d), f8), s((3, d, f), f8), scales)
    text = jax.jit(run).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text.lower() and "mlp_up_gated" in text and "mlp_down" in text
