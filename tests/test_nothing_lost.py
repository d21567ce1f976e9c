"""What the bad-input table cannot hold: signals, a platform that is not there, special files as
outputs, a resumed checkpoint of another task, and the valid input that used to be refused (a
batch smaller than a plan's replicas)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxpart.cli import main

POD = ["--model", "dense16", "--mesh", "h100x16"]


def _jaxpart(*args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "jaxpart.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_with_one_line(tmp_path, sig, code):
    out = tmp_path / "c.json"
    # a run of minutes (compare, 100 interleaved rounds), signalled once it is under way
    proc = _jaxpart("compare", "--repeats", "100", "--json", str(out))
    time.sleep(8)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1 and "jaxpart: " in stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing staged is left


def test_a_platform_that_is_not_there_is_one_line():
    proc = _jaxpart("generate", "--model", "dense16-tiny", env={"JAX_PLATFORMS": "gpu"})
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "JAX_PLATFORMS = 'gpu'" in lines[0], stderr


def test_devices_are_outputs_written_into(capfd):
    assert main(["plan", *POD, "--json", "/dev/null"]) == 0
    assert Path("/dev/null").is_char_device()  # written into, not replaced by a file
    capfd.readouterr()
    assert main(["plan", *POD, "--json", "/dev/stdout"]) == 0
    out = capfd.readouterr().out
    doc = json.loads(out[out.index("{\n") : out.rindex("}") + 1])
    assert doc["model"] == "dense16"


def test_resuming_another_task_says_what_differs(tmp_path, capsys):
    folder = str(tmp_path / "ck")
    assert main(["train", "--task", "copy", "--steps", "2", "--checkpoint", folder]) == 0
    saved = sorted(p.name for p in Path(folder).iterdir())
    capsys.readouterr()
    assert main(["train", "--task", "reverse", "--steps", "4", "--checkpoint", folder]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "trained on 'copy' (step 2)" in err and "--task = 'reverse'" in err
    assert sorted(p.name for p in Path(folder).iterdir()) == saved


@pytest.mark.parametrize("model", ["dense16-tiny", "gqa-tiny"])
def test_one_sequence_runs_layerwise_on_every_shipped_model_that_fits(model, capsys):
    args = ["generate", "--model", model, "--mesh", "cpu16", "--method", "layerwise"]
    assert main([*args, "--batch", "1", "--gen-len", "4"]) == 0
    out = capsys.readouterr().out
    assert "sequence 0:" in out and "sequence 1:" not in out


def test_one_sequence_runs_on_a_replicated_plan(tmp_path, capsys):
    """A 4-layer model's layer-wise plan on 16 devices is 4 stages copied 4 times: a batch of
    one runs one copy, and says so."""
    from jaxpart.config import resolve

    text = resolve("gqa-tiny", "models").read_text()
    model = tmp_path / "four.toml"
    model.write_text(text.replace("n_layers = 16", "n_layers = 4"))
    args = ["generate", "--model", str(model), "--mesh", "cpu16", "--method", "layerwise"]
    assert main([*args, "--batch", "1", "--gen-len", "4"]) == 0
    out = capsys.readouterr().out
    assert "replicas: a batch of 1 fills 1 of the plan's 4 replicas evenly" in out
    assert "sequence 0:" in out and "sequence 1:" not in out


def test_a_shipped_name_that_is_also_a_folder_here_says_which(tmp_path, capsys, monkeypatch):
    (tmp_path / "gqa-tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="using the shipped model"):
        assert main(["plan", "--model", "gqa-tiny", "--mesh", "cpu16"]) == 0
    assert "gqa-tiny" in capsys.readouterr().out


def test_a_tied_folder_that_ships_a_head_says_which_is_used(tmp_path, capsys):
    import tiny_checkpoints as tiny
    from safetensors.numpy import save_file

    from jaxpart.io.tensorfile import TensorFile

    folder = tiny.write_checkpoint(tmp_path / "tied", "llama-tiny-tied")
    stored = TensorFile(folder / "model.safetensors")
    tensors = {n: stored.read(n) for n in stored.names}
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] * 2
    save_file(tensors, str(folder / "model.safetensors"))
    args = ["generate", "--model", str(folder), "--method", "reference", "--batch", "1"]
    assert main([*args, "--gen-len", "2"]) == 0
    assert "the checkpoint's lm_head.weight is not used" in capsys.readouterr().out
