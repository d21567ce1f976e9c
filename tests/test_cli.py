"""`jaxpart plan` as a user runs it: the acceptance commands, and bad input -> one line, exit 2."""

import json
import os
import subprocess
import sys

import pytest

from jaxpart.cli import main
from jaxpart.config import resolve

TINY = ("--model", "dense16-tiny", "--mesh", "cpu16")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stated_figures_reproduce_the_seed(capsys, tmp_path):
    path = tmp_path / "p.json"
    code, out, _ = run(
        capsys,
        "plan",
        "--model",
        "dense16",
        "--mesh",
        "h100x16",
        "--figures",
        "stated",
        "--capacity",
        "14.73GB",
        "--json",
        str(path),
    )
    assert code == 0
    for figure in ("3.75 GB", "10.48 GB", "500.00 MB", "14.73 GB"):
        assert figure in out
    plan = json.loads(path.read_text())
    assert [len(s["layers"]) for s in plan["stages"]] == [1] * 16
    assert plan["capacity_bytes"] == 14_730_000_000
    assert plan["layer_bytes"] == [14_730_000_000] * 16

    code, out, _ = run(
        capsys,
        "plan",
        "--model",
        "dense16",
        "--mesh",
        "h100x16",
        "--figures",
        "stated",
        "--capacity",
        "29.46GB",
        "--json",
        str(path),
    )
    assert code == 0
    assert [len(s["layers"]) for s in json.loads(path.read_text())["stages"]] == [2] * 8


def test_derived_figures_and_discrepancies(capsys):
    code, out, _ = run(capsys, "plan", "--model", "dense16", "--mesh", "h100x16")
    assert code == 0
    for text in ("201,326,592", "402.65 MB", "10.49 GB", "21.47 GB", "30B", "leaves out"):
        assert text in out


def test_l2_model_in_l2(capsys):
    code, out, _ = run(
        capsys, "plan", "--model", "dense16-l2", "--mesh", "h100x16", "--capacity", "l2"
    )
    assert code == 0 and "16 stages x 1 device(s)" in out
    assert out.count("l2 (52.43 MB) │") == 16


def test_dense16_in_l2_is_a_one_line_error(capsys):
    code, out, err = run(
        capsys, "plan", "--model", "dense16", "--mesh", "h100x16", "--capacity", "l2"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "128 devices" in err and "mesh has 16" in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "missing", "--mesh", "h100x16"], "--model = 'missing'"),
        (["--model", "dense16", "--mesh", "h100x16", "--capacity", "-3GB"], "'-3GB'"),
        (["--model", "dense16", "--mesh", "h100x16", "--capacity", "12XB"], "'12XB'"),
        (["--model", "dense16", "--mesh", "h100x16", "--devices", "0"], "--devices: 0"),
        (
            [
                "--model",
                "dense16",
                "--mesh",
                "h100x16",
                "--strategy",
                "manual",
                "--layers-per-stage",
                "3,5,4",
            ],
            "sums to 12",
        ),
        (["--model", "dense16", "--mesh", "h100x16", "--strategy", "fast"], "--strategy"),
        (["--model", "dense16-tiny", "--mesh", "cpu16", "--figures", "stated"], "no [stated]"),
    ],
)
def test_bad_input(capsys, tmp_path, args, fragment):
    path = tmp_path / "p.json"
    code, out, err = run(capsys, "plan", *args, "--json", str(path))
    assert code == 2
    assert fragment in err and err.count("\n") == 1 and err.startswith("jaxpart: error: ")
    assert out == "" and not path.exists()


def test_bad_model_file_via_the_console_script(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        resolve("dense16-tiny", "models").read_text().replace("d_ff = 512", "d_ff = -512")
    )
    out_json = tmp_path / "p.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxpart.cli",
            "plan",
            "--model",
            str(bad),
            "--mesh",
            "cpu16",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"jaxpart: error: {bad}: field 'd_ff' = -512: must be a positive integer"
    )
    assert not out_json.exists()


def test_generate_json_same_tokens_for_each_method(capsys, tmp_path):
    tokens = {}
    for method in ("reference", "baseline", "layerwise"):
        path = tmp_path / f"{method}.json"
        code, out, _ = run(
            capsys,
            "generate",
            *TINY,
            "--method",
            method,
            "--gen-len",
            "6",
            "--json",
            str(path),
        )
        assert code == 0 and f"method: {method}" in out
        doc = json.loads(path.read_text())
        assert doc["method"] == method
        tokens[method] = doc["tokens"]
        assert (doc["plan"] is None) == (method == "reference")
    assert len(tokens["reference"]) == 16 and len(tokens["reference"][0]) == 6
    assert tokens["baseline"] == tokens["reference"] == tokens["layerwise"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch", "16", "--microbatches", "3"], "--batch = 16: must be divisible"),
        (["--gen-len", "60"], "exceeds the model's seq_len"),
        (["--prompt", "1,2,300"], "prompt token 300"),
        (["--method", "baseline", "--tp", "3"], "--tp = 3: must divide"),
        (["--method", "baseline", "--pp", "5"], "--tp x --pp = 8 x 5 = 40: must divide"),
    ],
)
def test_generate_bad_input(capsys, tmp_path, args, fragment):
    path = tmp_path / "g.json"
    code, out, err = run(capsys, "generate", *TINY, *args, "--json", str(path))
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert "Traceback" not in err and not path.exists()


def test_generate_in_a_fresh_process_sets_up_the_cpu_devices(tmp_path):
    # No XLA flags in the environment: the CLI gives the cpu16 mesh its 16 devices itself.
    path = tmp_path / "g.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxpart.cli",
            "generate",
            *TINY,
            "--method",
            "layerwise",
            "--gen-len",
            "3",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["plan"]["devices"] == 16 and len(doc["tokens"][0]) == 3


def test_piped_output_comes_as_it_is_produced():
    # In a pipe, compare prints a plain line as each method is placed, compiled and timed:
    # the first line arrives while the run is still going, not all at the end.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = ["compare", "--batch", "8", "--prompt-len", "8", "--gen-len", "3", "--repeats", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxpart.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert first.startswith("reference: placed") and still_running
    assert "layerwise / baseline TPS" in rest and "\x1b[" not in first + rest  # plain text


def test_output_files_get_the_users_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = tmp_path / "p.json"
        assert main(["plan", "--model", "dense16", "--mesh", "h100x16", "--json", str(path)]) == 0
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("width", [40, 64, 200])
def test_tables_fit_the_console_by_column_groups_and_never_cut_a_number(width):
    import io

    from rich.console import Console

    from jaxpart.cli.render import print_table, simulate_table
    from jaxpart.config import RunShape, load_mesh, load_model
    from jaxpart.perf.predict import constants_from
    from jaxpart.perf.simulate import run_simulate
    from jaxpart.planning.placement import DEFAULT_CHOICE

    model, mesh = load_model("dense16"), load_mesh("h100x16")
    sim = run_simulate(model, mesh, constants_from(mesh), DEFAULT_CHOICE, RunShape(128, 9872, 128))
    table = simulate_table(sim, "16")
    cells = [c for col in table.columns for c in col._cells]
    out = io.StringIO()
    print_table(Console(width=width, file=out, color_system=None), table, keep=2)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    for cell in cells:  # every number whole, on one line
        assert cell in text, cell
    groups = text.count("(continued")
    assert (groups == 0) == (width == 200)
    assert text.count("baseline") >= 1 + groups and text.count("layerwise") >= 1 + groups


def test_every_option_has_help_and_a_shown_default_and_model_mesh_default_by_one_rule():
    import argparse

    from jaxpart.cli.parser import PREDICT_DEFAULTS, RUN_DEFAULTS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[0] if action.option_strings else action.dest
            assert action.help, f"{name} {flag} has no help"
            shown = sub.formatter_class(name)._get_help_string(action)
            if action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in shown, f"{name} {flag}: default not shown"
        defaults = {a.dest: a.default for a in sub._actions}
        if "model" in defaults:
            runs = name in ("compare", "generate", "train")
            expected = RUN_DEFAULTS if runs else PREDICT_DEFAULTS
            assert defaults["model"] == expected[0], name
            if "mesh" in defaults:
                assert defaults["mesh"] == expected[1], name
        if name in ("plan", "simulate", "verify", "compare", "generate"):  # the run shape
            for shape in ("batch", "prompt_len", "gen_len", "dtype"):
                assert shape in defaults, f"{name} lacks --{shape.replace('_', '-')}"
