"""`jaxpart compare` end to end on 16 simulated CPU devices, reduced sizes. Timings are not
asserted (they depend on the machine); their presence, sign and the token checks are."""

import json
import math

import pytest

from jaxpart.cli import main

SMALL = ["--batch", "8", "--prompt-len", "8", "--gen-len", "4", "--repeats", "1"]


def test_compare_end_to_end_json_and_plot(capsys, tmp_path):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    code = main(["compare", *SMALL, "--json", str(out_json), "--plot", str(out_png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Measured on 16 simulated CPU devices" in out and "caveat" in out
    assert "TPS min-max over 1 rounds: reference" in out and "interleaved rounds" in out
    doc = json.loads(out_json.read_text())
    assert doc["measured_on"].startswith("16 simulated CPU devices")
    assert doc["model"] == "dense16-tiny"
    assert [m["name"] for m in doc["methods"]] == ["reference", "baseline", "layerwise"]
    for m in doc["methods"]:
        for field in ("tps", "tpot_ms", "ttft_ms", "ms_per_token_amortized"):
            assert m[field] > 0 and math.isfinite(m[field]), (m["name"], field)
        assert math.isclose(m["ms_per_token_amortized"], 1000 / m["tps"], rel_tol=1e-9)
        assert m["tps_range"][0] <= m["tps"] <= m["tps_range"][1]
        assert m["tokens_match_reference"] is True
    assert [m["devices"] for m in doc["methods"]] == [1, 16, 16]
    assert len(doc["plan"]["stages"]) == 16
    assert doc["baseline_plan"]["split"] == 8
    assert doc["breakdown"]["layerwise"]["collective_permutes_per_step"] == 16
    assert doc["breakdown"]["baseline"]["all_reduces_per_step"] > 0
    from matplotlib.image import imread

    image = imread(out_png)
    assert image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--microbatches", "3", "--batch", "16"], "--batch = 16: must be divisible"),
        (["--tp", "3"], "--tp = 3: must divide"),
        (["--mesh", "nowhere"], "--mesh = 'nowhere': not a shipped name"),
        (["--mesh", "h100x16"], "describes 16 NVIDIA H100 80GB HBM3 (gpu) but jax sees"),
        (["--attention", "flash"], "--attention"),
        (["--gen-len", "1"], "--gen-len = 1"),
    ],
)
def test_compare_bad_input(capsys, tmp_path, args, fragment):
    path = tmp_path / "out.json"
    code = main(["compare", *args, "--json", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert "Traceback" not in err and not path.exists()


def test_plot_without_matplotlib_is_a_clear_error(capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code = main(["compare", *SMALL, "--plot", str(tmp_path / "p.png")])
    _, err = capsys.readouterr()
    assert code == 2 and "pip install -e '.[plot]'" in err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("dtype, tolerance", [("bfloat16", 0.09), ("float16", 0.011)])
def test_two_byte_compare_passes_with_its_agreement_figures(capsys, tmp_path, dtype, tolerance):
    # Rounding makes near-ties go either way in 2-byte dtypes; teacher-forced, every placement
    # chooses the reference's token or misses within the rounding tolerance.
    path = tmp_path / "low.json"
    code = main(["compare", "--dtype", dtype, *SMALL, "--json", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"teacher-forced ({dtype})" in out and "max |dlogit|" in out
    doc = json.loads(path.read_text())
    assert [a["method"] for a in doc["agreement"]] == ["baseline", "layerwise"]
    for a in doc["agreement"]:
        assert a["faults"] == 0 and a["tolerance"] == tolerance
        assert 0.9 <= a["agreement"] <= 1 and 0 <= a["max_logit_delta"] < tolerance


def _reverse_first_stage(monkeypatch):
    """A real fault: the first pipeline stage applies its layers in reverse order."""
    from jaxpart.runtime.executors import pipeline

    real = pipeline.stage_layout

    def faulty(plan):
        rows, sizes = real(plan)
        rows = rows.copy()
        rows[: sizes[0]] = rows[: sizes[0]][::-1]
        return rows, sizes

    monkeypatch.setattr(pipeline, "stage_layout", faulty)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "fp8"])
def test_compare_catches_a_stage_running_its_layers_in_the_wrong_order(
    capsys, tmp_path, monkeypatch, dtype
):
    _reverse_first_stage(monkeypatch)
    path = tmp_path / "fault.json"
    # fp8: bfloat16 activations, FP8 weights (its tolerance in logit spreads)
    flags = ["--dtype", "bfloat16", "--quantize", "fp8"] if dtype == "fp8" else ["--dtype", dtype]
    code = main(["compare", *flags, *SMALL, "--json", str(path)])
    out, _ = capsys.readouterr()
    assert code == 1 and "disagrees with the reference" in out
    doc = json.loads(path.read_text())
    if dtype != "float32":
        assert all(a["faults"] > 0 and a["worst_gap"] > a["tolerance"] for a in doc["agreement"])
    else:
        # In f32 the layer-wise plan has one layer a stage (nothing to reverse); the baseline's
        # first stage holds 8.
        assert [m["tokens_match_reference"] for m in doc["methods"]][:2] == [True, False]


def test_nothing_compiles_while_timing(capsys, tmp_path):
    from jaxpart.measure.bench import compile_count

    path = tmp_path / "out.json"
    assert main(["compare", *SMALL[:-1], "3", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["compiles_while_timing"] == 0
    # ... and the counter does count: a new program compiles once.
    import jax
    import jax.numpy as jnp

    before = compile_count()
    jax.jit(lambda x: x * 3 + 1)(jnp.arange(7.0)).block_until_ready()
    assert compile_count() > before


def test_without_room_for_the_reference_the_placements_are_checked_against_each_other(
    capsys, tmp_path, monkeypatch
):
    from jaxpart.measure import compare

    monkeypatch.setattr(compare, "reference_bytes", lambda cfg, shape: 10**15)
    path = tmp_path / "out.json"
    code = main(["compare", *SMALL, "--json", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "the reference is not run: one device would need 1000.00 TB" in out
    doc = json.loads(path.read_text())
    assert [m["name"] for m in doc["methods"]] == ["baseline", "layerwise"]
    assert doc["checked_against"] == "baseline"
    assert doc["methods"][1]["tokens_match_reference"] is True


def test_a_winner_is_named_only_when_every_round_agrees():
    from jaxpart.measure.compare import verdict

    assert verdict([1.1, 1.3, 1.05], "A", "B") == "A faster in every round"
    assert verdict([0.7, 0.9], "A", "B") == "B faster in every round"
    assert verdict([0.9, 1.2, 1.0], "A", "B").startswith("within noise")


def test_reference_bytes_by_the_memory_model():
    from jaxpart.config.model import load_model_file
    from jaxpart.measure.compare import reference_bytes

    # dense16-l2's run (its [run] table: batch 128, 9872 + 128 = 10000 positions): 16 layers x
    # 10000 positions x 2 x 1024 x 2 bytes of KV per sequence is 84 GB at batch 128, more than
    # an 80 GB H100 holds, so the pod run checks placements.
    l2, l2_run = load_model_file("dense16-l2")
    assert l2_run.batch == 128 and l2_run.context == 10_000
    assert 80e9 < reference_bytes(l2, l2_run)
    tiny, tiny_run = load_model_file("dense16-tiny")
    assert tiny_run.batch == 16
    assert reference_bytes(tiny, tiny_run) < 1.61e9
