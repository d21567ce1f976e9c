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
    doc = json.loads(out_json.read_text())
    assert doc["measured_on"].startswith("16 simulated CPU devices")
    assert doc["model"] == "dense16-tiny"
    assert [m["name"] for m in doc["methods"]] == ["reference", "baseline", "layerwise"]
    for m in doc["methods"]:
        for field in ("tps", "tpot_ms", "ttft_ms", "ms_per_token_amortized"):
            assert m[field] > 0 and math.isfinite(m[field]), (m["name"], field)
        assert math.isclose(m["ms_per_token_amortized"], 1000 / m["tps"], rel_tol=1e-9)
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
        (["--mesh", "nowhere"], "--mesh = 'nowhere': not found"),
        (["--mesh", "h100x16"], "describes 16 NVIDIA H100 80GB HBM3 (gpu) but jax sees"),
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
