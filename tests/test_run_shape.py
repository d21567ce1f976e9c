"""One run shape: the flags mean the same on every command that plans. Given a shape, plan,
simulate, verify and plan --auto either all plan and predict at it, or all refuse it with the
same one-line reason."""

import json

import pytest

from jaxpart.cli import main
from jaxpart.config import RunShape, default_run, load_mesh, load_model
from jaxpart.planning.memory import kv_bytes
from jaxpart.planning.plan import Plan, make_plan

POD = ["--model", "dense16", "--mesh", "h100x16"]


def test_batch_512_is_refused_by_every_command_with_the_same_reason(capsys):
    errors = []
    for command in (["plan"], ["simulate"], ["verify"], ["plan", "--auto"]):
        assert main([*command, *POD, "--batch", "512"]) == 2, command
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, command
        errors.append(err)
    assert len(set(errors)) == 1, errors
    # The KV cache alone: 512 x 16 layers x 2 x 10240 positions x 4096 x 2 bytes = 1.37 TB
    assert "--batch = 512" in errors[0] and "1.37 TB" in errors[0] and "1.28 TB" in errors[0]
    assert "at most 474 sequences fit" in errors[0]


def test_a_batch_that_fits_is_planned_and_predicted_at_that_batch_everywhere(tmp_path):
    shape = ["--batch", "256", "--prompt-len", "4000", "--gen-len", "64"]
    files = {name: tmp_path / f"{name}.json" for name in ("plan", "simulate", "auto")}
    assert main(["plan", *POD, *shape, "--json", str(files["plan"])]) == 0
    assert main(["simulate", *POD, *shape, "--json", str(files["simulate"])]) == 0
    assert main(["plan", "--auto", *POD, *shape, "--json", str(files["auto"])]) == 0
    plan, sim, auto = (json.loads(files[k].read_text()) for k in ("plan", "simulate", "auto"))
    # The plan reserves the KV cache of 256 sequences, not of the file's 128.
    model = load_model("dense16")
    per_layer = kv_bytes(model, 256, 10240)
    assert plan["layer_bytes"][0] > per_layer > kv_bytes(model, 128, 10240)
    assert (sim["batch"], sim["prompt_len"], sim["gen_len"]) == (256, 4000, 64)
    assert (auto["batch"], auto["prompt_len"], auto["gen_len"]) == (256, 4000, 64)
    planned = make_plan(model, load_mesh("h100x16"), RunShape(256, 4000, 64))
    assert Plan.from_dict(sim["plans"]["layerwise"]) == planned == Plan.from_dict(plan)


def test_the_default_shape_is_the_model_files_run_table(tmp_path):
    path = tmp_path / "s.json"
    assert main(["simulate", *POD, "--json", str(path)]) == 0
    sim = json.loads(path.read_text())
    run = default_run("dense16")
    assert (sim["batch"], sim["prompt_len"], sim["gen_len"]) == (
        run.batch,
        run.prompt_len,
        run.gen_len,
    )


@pytest.mark.parametrize("command", [["plan"], ["simulate"], ["verify"], ["plan", "--auto"]])
def test_a_run_past_the_context_is_refused_alike(command, capsys):
    assert main([*command, *POD, "--prompt-len", "9990", "--gen-len", "20"]) == 2
    err = capsys.readouterr().err
    assert "--gen-len = 20: prompt 9990 + generation 20 = 10010 exceeds the model's seq_len" in err


@pytest.mark.slow
def test_verify_compiles_at_the_shape_the_flags_give(tmp_path):
    path = tmp_path / "v.json"
    shape = ["--batch", "64", "--prompt-len", "4000", "--gen-len", "64", "--microbatches", "16"]
    assert main(["verify", *POD, *shape, "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert (doc["batch"], doc["prompt_len"], doc["gen_len"], doc["microbatches"]) == (
        64,
        4000,
        64,
        16,
    )
    assert doc["plan"] == json.loads(
        json.dumps(
            make_plan(
                load_model("dense16"), load_mesh("h100x16"), RunShape(64, 4000, 64, 16)
            ).to_dict()
        )
    )
