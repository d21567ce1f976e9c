"""A CLI tour: every subcommand, with every documented form of its inputs, runs on the tiny
models (dense16-tiny, gqa-tiny, a tiny Hugging Face folder, a checkpoint trained for two steps)
and exits 0 without a traceback; every output file it is asked for can be read back."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxpart.cli import main
from jaxpart.config import resolve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tiny", ROOT / "tests" / "tiny_checkpoints.py")
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)

TINY = ("--model", "dense16-tiny", "--mesh", "cpu16")
PROMPT = "5,17,42,99,3,7"
SMALL = ("--batch", "8", "--prompt-len", "8", "--gen-len", "4", "--repeats", "1")
RAGGED = [[5, 17, 42], [1, 2, 3, 4, 5, 6, 7], [9], [30, 31]]
TEXTS = ["w1 w2 w3", "w4 w5", "w7 w8 w9 w10"]
# A subprocess gets no XLA flags: the CLI gives a CPU mesh its simulated devices itself.
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"COLUMNS": "200"}


def jaxpart(capsys, *argv: str) -> str:
    """Run one command in this process; it must exit 0 without a traceback. Its stdout."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 0, err[-3000:]
    return out


def subprocess_jaxpart(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "jaxpart.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def sequence_lines(out: str) -> list[list[int]]:
    """The token ids of each `  sequence i: ...` line generate prints, in order."""
    rows = [line.split(":", 1) for line in out.splitlines() if line.startswith("  sequence ")]
    assert [head.strip() for head, _ in rows] == [f"sequence {i}" for i in range(len(rows))]
    return [[int(t) for t in tail.split()] for _, tail in rows]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    """One tiny Llama folder (config.json, model.safetensors, tokenizer.json) for the tour."""
    return tiny.write_checkpoint(tmp_path_factory.mktemp("hf") / "llama", "llama-tiny-untied")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompts")
    ids, text = root / "ids.txt", root / "text.txt"
    ids.write_text("".join(json.dumps(row) + "\n" for row in RAGGED))
    text.write_text("\n".join(TEXTS[:2]) + "\n\n" + TEXTS[2] + "\n")  # a blank line is skipped
    return {"ids": ids, "text": text}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint folder from `jaxpart train --steps 2 --checkpoint DIR`."""
    from jaxpart.io import checkpoint

    ck = tmp_path_factory.mktemp("train") / "ck"
    assert main(["train", "--model", "dense16-tiny", "--steps", "2", "--checkpoint", str(ck)]) == 0
    assert checkpoint.latest_step(str(ck)) == 2
    return ck


# --- generate ---------------------------------------------------------------------------------


def test_generate_one_prompt_is_broadcast_to_the_default_batch(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    out = jaxpart(capsys, "generate", "--prompt", PROMPT, "--json", out_json)
    rows = sequence_lines(out)
    assert len(rows) == 16 and "one prompt of 6 tokens, x16" in out
    doc = read_json(out_json)
    assert len(doc["tokens"]) == 16 and doc["shape"]["batch"] == 16
    assert all(row == doc["tokens"][0] for row in doc["tokens"]), "one prompt, greedy: one answer"
    assert rows == [row[:n] for row, n in zip(doc["tokens"], doc["lengths"], strict=True)]


def test_generate_one_prompt_in_a_pipe_prints_every_sequence_as_plain_text():
    proc = subprocess_jaxpart("generate", *TINY, "--prompt", PROMPT, "--gen-len", "2")
    assert len(sequence_lines(proc.stdout)) == 16
    assert "\x1b[" not in proc.stdout


def test_generate_one_prompt_with_a_batch(capsys):
    out = jaxpart(capsys, "generate", *TINY, "--prompt", PROMPT, "--batch", "4", "--gen-len", "3")
    rows = sequence_lines(out)
    assert len(rows) == 4 and all(len(r) == 3 for r in rows)


def test_generate_a_ragged_file_of_token_ids(capsys, files, tmp_path):
    out_json = tmp_path / "g.json"
    args = ["--prompts", files["ids"], "--gen-len", "3", "--json", out_json]
    out = jaxpart(capsys, "generate", *TINY, *args)
    assert len(sequence_lines(out)) == len(RAGGED)
    doc = read_json(out_json)
    assert len(doc["tokens"]) == len(RAGGED) and doc["lengths"] == [3] * len(RAGGED)
    assert doc["shape"]["prompt_len"] == max(map(len, RAGGED))


@pytest.mark.parametrize("form", ["text file", "repeated --text", "ids file"])
def test_generate_several_prompts_with_a_tokenizer(capsys, hf, files, tmp_path, form):
    source = {
        "text file": ["--prompts", files["text"]],
        "repeated --text": [a for t in TEXTS for a in ("--text", t)],
        "ids file": ["--prompts", files["ids"]],
    }[form]
    expected = len(RAGGED) if form == "ids file" else len(TEXTS)
    out_json = tmp_path / "g.json"
    args = ["--model", hf, "--mesh", "cpu16", "--gen-len", "3", "--json", out_json]
    out = jaxpart(capsys, "generate", *args, *source)
    assert out.count("' -> '") == expected
    doc = read_json(out_json)
    assert len(doc["tokens"]) == expected and len(doc["text"]) == expected
    if form != "ids file":
        for text in TEXTS:
            assert f"'{text}' -> " in out


def test_generate_a_task(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    out = jaxpart(capsys, "generate", *TINY, "--task", "copy", "--json", out_json)
    assert "task accuracy (copy)" in out and " -> " in out
    doc = read_json(out_json)
    assert 0 <= doc["task_accuracy"] <= 1 and len(doc["tokens"]) == 16


@pytest.mark.parametrize("method", ["reference", "baseline", "layerwise"])
def test_generate_each_method(capsys, tmp_path, method):
    out_json = tmp_path / "g.json"
    out = jaxpart(
        capsys, "generate", *TINY, "--method", method, "--gen-len", "2", "--json", out_json
    )
    assert f"method: {method} (dense16-tiny, float32)" in out and len(sequence_lines(out)) == 16
    doc = read_json(out_json)
    assert doc["method"] == method and len(doc["tokens"]) == 16
    if method == "reference":
        assert doc["plan"] is None
    else:
        assert doc["plan"]["devices"] == 16
        assert doc["plan"]["split"] == (8 if method == "baseline" else 1)


def test_generate_the_baseline_at_another_tp_and_pp(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    args = ["--method", "baseline", "--tp", "4", "--pp", "4", "--gen-len", "2", "--json", out_json]
    out = jaxpart(capsys, "generate", *TINY, *args)
    assert "4 stages x 4 device(s)" in out
    doc = read_json(out_json)
    assert doc["plan"]["split"] == 4 and len(doc["plan"]["stages"]) == 4


def test_generate_shape_seed_and_kernel_flags(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    shape = ["--batch", "8", "--prompt-len", "8", "--gen-len", "3", "--microbatches", "4"]
    kernels = ["--mlp-kernel", "xla", "--attention", "xla", "--strict", "--seed", "3"]
    out = jaxpart(capsys, "generate", *TINY, *shape, *kernels, "--json", out_json)
    assert "random, seed 3" in out and len(sequence_lines(out)) == 8
    shape = read_json(out_json)["shape"]
    assert [shape[k] for k in ("batch", "prompt_len", "gen_len", "microbatches")] == [8, 8, 3, 4]


def test_generate_sampling_and_stopping_flags(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    sampling = ["--temperature", "0.8", "--top-k", "5", "--top-p", "0.9", "--sampling-seed", "3"]
    stopping = ["--stop-tokens", "7,9", "--pad-token", "1", "--show", "3"]
    args = [*sampling, *stopping, "--gen-len", "4", "--json", out_json]
    out = jaxpart(capsys, "generate", *TINY, *args)
    assert len(sequence_lines(out)) == 3 and "... 13 more sequences" in out
    assert "sampled at temperature 0.8, top-k 5, top-p 0.9, seed 3; stop tokens [7, 9]" in out
    doc = read_json(out_json)
    assert len(doc["tokens"]) == 16, "--show limits what is printed, not what is written"
    g = doc["generation"]
    assert (g["temperature"], g["top_k"], g["top_p"], g["seed"]) == (0.8, 5, 0.9, 3)
    assert g["stop_tokens"] == [7, 9] and g["pad_token"] == 1
    for row, n in zip(doc["tokens"], doc["lengths"], strict=True):
        assert 1 <= n <= 4 and all(t == 1 for t in row[n:])


def test_generate_the_readme_sampling_example(capsys):
    args = ["--temperature", "0.8", "--top-p", "0.9", "--stop-tokens", "3", "--show", "4"]
    out = jaxpart(capsys, "generate", *TINY, *args, "--gen-len", "4")
    assert len(sequence_lines(out)) == 4 and "... 12 more sequences" in out


def test_generate_a_hugging_face_folder(capsys, hf, tmp_path):
    out_json = tmp_path / "g.json"
    args = ["--model", hf, "--mesh", "cpu16", "--gen-len", "2", "--show", "2", "--json", out_json]
    out = jaxpart(capsys, "generate", *args)
    assert f"weights: {hf} (safetensors)" in out and "read from the checkpoint" in out
    assert len(sequence_lines(out)) == 2 and "... 14 more sequences" in out  # random prompts
    doc = read_json(out_json)
    assert len(doc["tokens"]) == 16 and doc["checkpoint_bytes"] > 0


def test_generate_a_hugging_face_folder_with_one_prompt(capsys, hf, tmp_path):
    # Token ids given by --prompt, as by a --prompts file of ids: the folder's tokenizer shows
    # them as text, and its EOS (id 2) stops a sequence.
    out_json = tmp_path / "g.json"
    args = ["--model", hf, "--mesh", "cpu16", "--prompt", "9,11", "--json", out_json]
    out = jaxpart(capsys, "generate", *args)
    assert out.count("'w6 w8' -> '") == 16 and "stop tokens [2]" in out
    doc = read_json(out_json)
    assert len(doc["text"]) == 16 and doc["generation"]["stop_tokens"] == [2]


def test_generate_from_a_trained_checkpoint(capsys, trained, tmp_path):
    out_json = tmp_path / "g.json"
    args = ["--checkpoint", trained, "--gen-len", "2", "--json", out_json]
    out = jaxpart(capsys, "generate", *TINY, *args)
    assert str(trained) in out and len(sequence_lines(out)) == 16
    assert len(read_json(out_json)["tokens"]) == 16


def test_generate_a_task_from_a_trained_checkpoint_by_the_baseline(capsys, trained):
    args = ["--method", "baseline", "--checkpoint", trained, "--task", "copy"]
    out = jaxpart(capsys, "generate", *TINY, *args)
    assert "task accuracy (copy)" in out and "method: baseline" in out


def test_generate_a_manual_plan(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    manual = ["--strategy", "manual", "--layers-per-stage", "3,5,4,4", "--capacity", "hbm"]
    args = [*manual, "--batch", "32", "--microbatches", "4", "--gen-len", "2", "--json", out_json]
    out = jaxpart(capsys, "generate", *TINY, "--method", "layerwise", *args)
    assert len(sequence_lines(out)) == 32
    doc = read_json(out_json)
    assert [len(s["layers"]) for s in doc["plan"]["stages"]] == [3, 5, 4, 4]
    assert doc["shape"]["microbatches"] == 4


def test_generate_gqa_tiny_by_the_baseline_in_bfloat16(capsys, tmp_path):
    out_json = tmp_path / "g.json"
    args = ["--method", "baseline", "--dtype", "bfloat16", "--gen-len", "2", "--json", out_json]
    out = jaxpart(capsys, "generate", "--model", "gqa-tiny", "--mesh", "cpu16", *args)
    assert "method: baseline (gqa-tiny, bfloat16)" in out and len(sequence_lines(out)) == 16
    assert read_json(out_json)["dtype"] == "bfloat16"


# --- compare ----------------------------------------------------------------------------------

METHODS = ["reference", "baseline", "layerwise"]


def compare_doc(capsys, tmp_path, *argv: str) -> tuple[str, dict]:
    out_json = tmp_path / "c.json"
    out = jaxpart(capsys, "compare", *argv, "--repeats", "1", "--json", out_json)
    assert "layerwise / baseline TPS" in out and "predicted layerwise / baseline TPS" in out
    doc = read_json(out_json)
    assert [m["name"] for m in doc["methods"]] == METHODS
    return out, doc


def test_compare_at_small_settings_writes_json_and_a_plot(capsys, tmp_path):
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    out = jaxpart(capsys, "compare", *SMALL, "--json", out_json, "--plot", out_png)
    for method in METHODS:
        assert f"{method}: placed" in out  # a plain progress line as each step ends
    assert f"written to {out_json}" in out and f"written to {out_png}" in out
    doc = read_json(out_json)
    assert {"measured_on", "methods", "ratios", "plan", "baseline_plan", "breakdown"} <= set(doc)
    assert (doc["batch"], doc["prompt_len"], doc["gen_len"]) == (8, 8, 4)
    assert [m["name"] for m in doc["methods"]] == METHODS
    assert all(m["tokens_match_reference"] for m in doc["methods"][1:])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_auto(capsys, tmp_path):
    out, doc = compare_doc(capsys, tmp_path, *SMALL[:-2], "--auto")
    assert "--auto: baseline: " in out and "--auto: layerwise: " in out
    assert doc["batch"] == 8


def test_compare_a_task(capsys, tmp_path):
    out, doc = compare_doc(capsys, tmp_path, "--task", "copy", "--batch", "8")
    assert "prompts: task copy" in out and doc["batch"] == 8


def test_compare_a_file_of_token_ids(capsys, files, tmp_path):
    out, doc = compare_doc(capsys, tmp_path, "--prompts", files["ids"], "--gen-len", "4")
    assert doc["batch"] == len(RAGGED) and doc["prompt_len"] == max(map(len, RAGGED))
    assert f"{len(RAGGED)} prompt(s) of token ids" in out


def test_compare_text_with_a_hugging_face_folder(capsys, hf, tmp_path):
    text = [a for t in TEXTS for a in ("--text", t)]
    out, doc = compare_doc(capsys, tmp_path, "--model", hf, *text, "--gen-len", "4")
    assert doc["batch"] == len(TEXTS) and f"{len(TEXTS)} text prompt(s)" in out
    assert doc["weights"] == f"{hf} (safetensors)"


def test_compare_bfloat16(capsys, tmp_path):
    out, doc = compare_doc(capsys, tmp_path, *SMALL[:-2], "--dtype", "bfloat16")
    assert doc["dtype"] == "bfloat16" and "teacher-forced (bfloat16)" in out


def test_compare_microbatches(capsys, tmp_path):
    predict = ["--predict-for", "llama3.1-8b", "h100x16"]
    out, doc = compare_doc(capsys, tmp_path, *SMALL[:-2], "--microbatches", "4", *predict)
    assert doc["breakdown"]["layerwise"]["microbatches"] == 4
    assert "predicted layerwise / baseline TPS on h100x16" in out and "llama3.1-8b" in out


def test_compare_a_task_from_a_trained_checkpoint(capsys, trained, tmp_path):
    out, doc = compare_doc(capsys, tmp_path, "--checkpoint", trained, "--task", "copy")
    assert str(trained) in doc["weights"] and "prompts: task copy" in out


# --- plan -------------------------------------------------------------------------------------


def plan_doc(capsys, tmp_path, *argv: str) -> tuple[str, dict]:
    out_json = tmp_path / "p.json"
    out = jaxpart(capsys, "plan", *argv, "--json", out_json)
    return out, read_json(out_json)


def stage_sizes(doc: dict) -> list[int]:
    return [len(s["layers"]) for s in doc["stages"]]


def test_plan_plain(capsys, tmp_path):
    out = jaxpart(capsys, "plan")
    assert "Plan: dense16 on h100x16, greedy" in out and "16 stages x 1 device(s)" in out
    _, doc = plan_doc(capsys, tmp_path)
    assert (doc["model"], doc["mesh"], stage_sizes(doc)) == ("dense16", "h100x16", [1] * 16)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "llama3.1-70b", "--mesh", "h100x16"],
        ["--objective", "ttft"],
        [*TINY],
    ],
)
def test_plan_auto(capsys, tmp_path, argv):
    out, doc = plan_doc(capsys, tmp_path, *argv, "--auto")
    assert "a decode tick's largest parts" in out
    assert 1 <= len(doc["top"]) <= 10 and doc["candidates_fitting"] >= len(doc["top"])
    assert doc["objective"] == ("ttft" if "--objective" in argv else "throughput")


@pytest.mark.parametrize("capacity, sizes", [("14.73GB", [1] * 16), ("29.46GB", [2] * 8)])
def test_plan_stated_figures(capsys, tmp_path, capacity, sizes):
    out, doc = plan_doc(capsys, tmp_path, "--figures", "stated", "--capacity", capacity)
    assert "14.73 GB" in out and stage_sizes(doc) == sizes
    assert doc["capacity_bytes"] == int(float(capacity[:-2]) * 1e9)


def test_plan_a_run_shape_and_dtype(capsys, tmp_path):
    shape = ["--batch", "64", "--prompt-len", "2048", "--gen-len", "128", "--dtype", "float16"]
    out, doc = plan_doc(capsys, tmp_path, *shape)
    assert "Plan: dense16 on h100x16" in out and sum(stage_sizes(doc)) == 16


def test_plan_balanced_on_fewer_devices(capsys, tmp_path):
    out, doc = plan_doc(capsys, tmp_path, "--strategy", "balanced", "--devices", "8")
    assert "balanced" in out and doc["devices"] == 8 and stage_sizes(doc) == [2] * 8


def test_plan_balanced_on_the_tiny_model(capsys, tmp_path):
    args = ["--strategy", "balanced", "--devices", "5", "--capacity", "hbm"]
    _, doc = plan_doc(capsys, tmp_path, *TINY, *args)
    assert len(doc["stages"]) == 5 and sum(stage_sizes(doc)) == 16


def test_plan_manual_on_the_tiny_model(capsys, tmp_path):
    args = ["--strategy", "manual", "--layers-per-stage", "3,5,4,4", "--capacity", "16MB"]
    out, doc = plan_doc(capsys, tmp_path, *TINY, *args)
    assert "Plan: dense16-tiny on cpu16, manual" in out
    assert stage_sizes(doc) == [3, 5, 4, 4] and doc["devices"] == 16


def test_plan_manual_at_the_default_capacity_is_one_line(capsys):
    # cpu16's default capacity is its L2 (1 MiB): stages of 3-5 layers need a tensor split of 8,
    # 32 devices in all. The README's form adds --capacity; without it, one line says why.
    args = ["--strategy", "manual", "--layers-per-stage", "3,5,4,4"]
    assert main(["plan", *TINY, *args]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err.count("\n") == 1
    assert "larger --capacity" in err


def test_plan_a_hugging_face_folder(capsys, hf, tmp_path):
    out, doc = plan_doc(capsys, tmp_path, "--model", hf, "--mesh", "cpu16")
    assert sum(stage_sizes(doc)) == 16 and doc["devices"] == 16
    assert "Plan: " in out


def test_plan_a_toml_path(capsys, tmp_path):
    model = resolve("gqa-tiny", "models")
    out, doc = plan_doc(capsys, tmp_path, "--model", model, "--mesh", resolve("cpu16", "meshes"))
    assert doc["model"] == "gqa-tiny" and sum(stage_sizes(doc)) == 16
    assert "Plan: gqa-tiny on cpu16" in out


# --- simulate ---------------------------------------------------------------------------------


def simulate_doc(capsys, tmp_path, *argv: str) -> tuple[str, dict]:
    out_json = tmp_path / "s.json"
    out = jaxpart(capsys, "simulate", *argv, "--json", out_json)
    return out, read_json(out_json)


def test_simulate_plain(capsys, tmp_path):
    out = jaxpart(capsys, "simulate")
    assert "layerwise / baseline TPS: " in out
    _, doc = simulate_doc(capsys, tmp_path)
    assert {"methods", "ratios", "floor", "seed_verdicts"} <= set(doc)
    assert doc["ratios"]["tps_layerwise_over_baseline"] > 0


def test_simulate_an_fp8_model(capsys, tmp_path):
    out, doc = simulate_doc(capsys, tmp_path, "--model", "llama3.1-70b-fp8", "--mesh", "h100x16")
    assert "layerwise / baseline TPS: " in out and doc["model"] == "llama3.1-70b-fp8"


@pytest.mark.parametrize(
    "sweep, key, values",
    [("d_model=1024,2048", "d_model", [1024, 2048]), ("batch=64,128", "batch", [64, 128])],
)
def test_simulate_a_sweep(capsys, tmp_path, sweep, key, values):
    out, doc = simulate_doc(capsys, tmp_path, "--sweep", sweep)
    assert doc["sweep"]["key"] == key
    assert [row["value"] for row in doc["sweep"]["rows"]] == values
    for value in values:
        assert f"{key} = {value:>6}: layerwise / baseline TPS" in out


def test_simulate_validate(capsys, tmp_path):
    out, doc = simulate_doc(capsys, tmp_path, "--validate")
    assert "predicted / measured geometric mean" in out
    assert len(doc["points"]) > 0 and set(doc["summary"]) and doc["points"][0]["ratio"] > 0


# --- verify -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, mesh, method",
    [
        ("dense16-tiny", "cpu16", "layerwise"),
        ("dense16-tiny", "cpu16", "baseline"),
        ("dense16", "h100x16", "layerwise"),  # the README's: full size, abstract arrays
        ("llama3.1-70b-fp8", "h100x16", "baseline"),  # float8 weights and cache
    ],
)
def test_verify(capsys, tmp_path, model, mesh, method):
    out_json = tmp_path / "v.json"
    args = ["--model", model, "--mesh", mesh, "--method", method, "--json", out_json]
    out = jaxpart(capsys, "verify", *args)
    assert f"{method} plan of {model}" in out and f"memory model on {mesh}" in out
    doc = read_json(out_json)
    assert {"programs", "predicted_per_device", "xla_peak_bytes", "cost_check"} <= set(doc)
    assert (doc["model"], doc["mesh"], doc["method"], doc["fits_hbm"]) == (
        model,
        mesh,
        method,
        True,
    )


# --- train and launch -------------------------------------------------------------------------


def test_train_plain(capsys):
    args = ["--steps", "2", "--batch", "8", "--task", "reverse", "--lr", "0.001", "--seed", "1"]
    out = jaxpart(capsys, "train", *args)
    assert "reverse: " in out and "exact answers by greedy generation" in out
    assert "step 2/2: loss" in out  # in a pipe: a plain line at the last step


def test_train_resumes_a_finished_checkpoint(capsys, trained):
    out = jaxpart(capsys, "train", "--steps", "2", "--checkpoint", trained)
    assert "resuming from step 2" in out and "nothing to do" in out
    assert f"checkpoint: {trained} (step 2)" in out


def test_launch_two_processes_generate(tmp_path):
    out_json = tmp_path / "g.json"
    proc = subprocess_jaxpart(
        "launch", "--processes", "2", "--", "generate", *TINY, "--gen-len", "2", "--json", out_json
    )
    assert proc.stdout.count("method: layerwise") == 1, "only process 0 prints"
    assert len(sequence_lines(proc.stdout)) == 16
    doc = read_json(out_json)
    assert len(doc["tokens"]) == 16 and all(len(row) == 2 for row in doc["tokens"])
