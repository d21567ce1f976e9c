"""Every bad input is one line and exit 2, checked before any work, and leaves no output file.

Placeholders: {file} a regular file, {dir} a folder, {out} a fresh path for an output,
{missing} a path that does not exist, {bad_toml} a file that is not TOML, {bad_model} a model
file with a field out of range, {ids} a prompts file with a token outside the vocab,
{empty} an empty prompts file, {damaged} a checkpoint folder with a damaged step.
"""

import pytest

from jaxpart.cli import main

TINY = ["--model", "dense16-tiny", "--mesh", "cpu16"]
POD = ["--model", "dense16", "--mesh", "h100x16"]

CASES = [
    # -- the table of the issue ------------------------------------------------------------------
    ("train", "--steps", "2", "--checkpoint", "{file}"),
    ("train", "--checkpoint", "{file}/ck"),
    ("generate", *TINY, "--seed", "-1"),
    ("compare", "--seed", "-1"),
    ("train", "--seed", "-1"),
    ("launch", "--processes", "2", "--", "generate", *TINY, "--seed", "-1"),
    ("plan", *POD, "--capacity", "1e400GB"),
    ("plan", *POD, "--json", "{file}/x.json"),
    ("plan", *POD, "--json", "{dir}"),
    ("generate", *TINY, "--json", "{file}/x.json"),
    ("generate", *TINY, "--json", "{dir}"),
    ("compare", "--json", "{file}/x.json"),
    ("compare", "--json", "{dir}"),
    ("simulate", *POD, "--json", "{file}/x.json"),
    ("simulate", *POD, "--json", "{dir}"),
    ("compare", "--plot", "{out}.txt", "--json", "{out}.json"),
    ("compare", "--plot", "{file}/p.png", "--json", "{out}.json"),
    ("plan", *POD, "--devices", "32"),
    (
        "plan",
        "--model",
        "dense16-tiny",
        "--mesh",
        "cpu16",
        "--strategy",
        "balanced",
        "--devices",
        "17",
    ),
    ("simulate", *POD, "--prompt-len", "20000"),
    # -- plan ------------------------------------------------------------------------------------
    ("plan", "--dtype", "int8"),
    ("plan", "--auto", "--capacity", "l2"),
    ("plan", "--auto", "--strategy", "balanced"),
    ("compare", "--auto", "--tp", "4"),
    ("simulate", "--validate", "--sweep", "d_model=1024"),
    ("simulate", "--validate", "--model", "llama3.1-8b"),
    ("plan", "--mesh", "nowhere"),
    ("simulate", "--tp", "3"),
    ("simulate", "--pp", "5"),
    ("simulate", "--dtype", "float64"),
    ("verify", "--method", "baseline", "--tp", "3"),
    ("compare", "--tp", "3"),
    ("generate", "--method", "baseline", "--pp", "3"),
    ("plan", *POD, "--capacity", "-3GB"),
    ("plan", *POD, "--capacity", "0"),
    ("plan", *POD, "--capacity", "lots"),
    ("plan", *POD, "--capacity", "12XB"),
    ("plan", *POD, "--capacity", "NaNGB"),
    ("plan", *POD, "--strategy", "random"),
    ("plan", *POD, "--strategy", "manual"),
    ("plan", *POD, "--layers-per-stage", "8,8"),
    ("plan", *POD, "--strategy", "manual", "--layers-per-stage", "8,7"),
    ("plan", *POD, "--strategy", "manual", "--layers-per-stage", "a,b"),
    ("plan", *POD, "--devices", "0"),
    ("plan", *POD, "--devices", "-2"),
    ("plan", *POD, "--figures", "guessed"),
    ("plan", *POD, "--batch", "0"),
    ("plan", *POD, "--prompt-len", "9999", "--gen-len", "9999"),
    ("plan", "--model", "nosuchmodel", "--mesh", "h100x16"),
    ("plan", "--model", "dense16", "--mesh", "nosuchmesh"),
    ("plan", "--model", "{missing}.toml", "--mesh", "h100x16"),
    ("plan", "--model", "{bad_toml}", "--mesh", "h100x16"),
    ("plan", "--model", "{bad_model}", "--mesh", "h100x16"),
    ("plan", "--model", "dense16", "--mesh", "{bad_toml}"),
    ("plan", *POD, "--auto", "--objective", "speed"),
    ("plan", *POD, "--capacity", "l2"),
    ("plan", *POD, "--capacity", "smem"),
    ("plan", *POD, "--json", ""),
    ("plan", *POD, "--nosuchflag"),
    # -- generate --------------------------------------------------------------------------------
    ("generate", *TINY, "--batch", "0"),
    ("generate", *TINY, "--batch", "x"),
    ("generate", *TINY, "--gen-len", "0"),
    ("generate", *TINY, "--gen-len", "1000"),
    ("generate", *TINY, "--prompt-len", "100"),
    ("generate", *TINY, "--microbatches", "3"),
    ("generate", *TINY, "--method", "magic"),
    ("generate", *TINY, "--dtype", "int8"),
    ("generate", *TINY, "--prompt", "1,2,x"),
    ("generate", *TINY, "--prompt", "1,2,99999"),
    ("generate", *TINY, "--prompt", "5,17", "--prompt-len", "8"),
    ("generate", *TINY, "--task", "copy", "--prompt-len", "8"),
    ("generate", *TINY, "--task", "copy", "--prompt", "1,2"),
    ("generate", *TINY, "--task", "sort"),
    ("generate", *TINY, "--temperature", "-1"),
    ("generate", *TINY, "--temperature", "nan"),
    ("generate", *TINY, "--temperature", "inf"),
    ("generate", *TINY, "--top-p", "0"),
    ("generate", *TINY, "--top-p", "2"),
    ("generate", *TINY, "--top-k", "-3"),
    ("generate", *TINY, "--sampling-seed", "-5"),
    ("generate", *TINY, "--stop-tokens", "1,x"),
    ("generate", *TINY, "--stop-tokens", "99999"),
    ("generate", *TINY, "--pad-token", "99999"),
    ("generate", *TINY, "--show", "0"),
    ("generate", *TINY, "--text", "hello"),
    ("generate", *TINY, "--prompts", "{missing}"),
    ("generate", *TINY, "--prompts", "{empty}"),
    ("generate", *TINY, "--prompts", "{ids}"),
    ("generate", *TINY, "--prompts", "{dir}"),
    ("generate", *TINY, "--checkpoint", "{missing}"),
    ("generate", *TINY, "--checkpoint", "{file}"),
    ("generate", *TINY, "--checkpoint", "{damaged}"),
    ("generate", *TINY, "--mlp-kernel", "cuda"),
    ("generate", *TINY, "--attention", "flash"),
    ("generate", *TINY, "--tp", "3", "--method", "baseline"),
    ("generate", *TINY, "--tp", "0"),
    ("generate", *TINY, "--pp", "5", "--method", "baseline"),
    ("generate", *TINY, "--num-processes", "0"),
    ("generate", *TINY, "--num-processes", "2"),
    (
        "generate",
        *TINY,
        "--num-processes",
        "2",
        "--process-id",
        "2",
        "--coordinator",
        "127.0.0.1:1",
    ),
    ("generate", *TINY, "--process-id", "-1"),
    ("generate", *TINY, "--num-processes", "2", "--coordinator", "nowhere"),
    ("generate", *TINY, "--num-processes", "2", "--coordinator", "127.0.0.1:99999"),
    ("generate", *TINY, "--init-timeout", "0"),
    ("generate", "--model", "llama3.1-70b-fp8", "--mesh", "cpu16"),
    ("generate", *TINY, "--capacity", "1KB"),
    # -- compare ---------------------------------------------------------------------------------
    ("compare", "--repeats", "0"),
    ("compare", "--gen-len", "1"),
    ("compare", "--batch", "3", "--microbatches", "2"),
    ("compare", "--predict-for", "dense16", "nosuchmesh"),
    ("compare", "--predict-for", "nosuchmodel", "h100x16"),
    ("compare", "--plot", "{dir}"),
    ("compare", "--plot", "{out}"),
    ("compare", "--mesh", "h100x16"),
    ("compare", "--dtype", "float64"),
    ("compare", "--strategy", "manual", "--layers-per-stage", "20"),
    ("compare", "--prompts", "{ids}"),
    ("compare", "--text", "a", "--batch", "4"),
    # -- simulate --------------------------------------------------------------------------------
    ("simulate", *POD, "--sweep", "d_model="),
    ("simulate", *POD, "--sweep", "heads=8"),
    ("simulate", *POD, "--sweep", "d_model=1000"),
    ("simulate", *POD, "--calibration", "{missing}"),
    ("simulate", *POD, "--calibration", "{bad_toml}"),
    ("simulate", *POD, "--gen-len", "1"),
    ("simulate", *POD, "--microbatches", "7"),
    ("simulate", *POD, "--batch", "0"),
    ("simulate", *POD, "--validate", "--json", "{dir}"),
    # -- verify ----------------------------------------------------------------------------------
    ("verify", *POD, "--method", "reference"),
    ("verify", *POD, "--batch", "0"),
    ("verify", *POD, "--prompt-len", "20000"),
    ("verify", *POD, "--json", "{file}/v.json"),
    ("verify", *POD, "--tp", "5", "--method", "baseline"),
    # -- train -----------------------------------------------------------------------------------
    ("train", "--steps", "0"),
    ("train", "--lr", "-1"),
    ("train", "--lr", "nan"),
    ("train", "--batch", "0"),
    ("train", "--every", "0"),
    ("train", "--task", "sort"),
    ("train", "--model", "nosuchmodel"),
    ("train", "--checkpoint", "{missing}/sub/ck"),
    ("train", "--checkpoint", "{damaged}", "--steps", "2"),
    # -- launch ----------------------------------------------------------------------------------
    ("launch", "--processes", "0", "--", "generate", *TINY),
    ("launch", "--processes", "2", "--", "plan", *POD),
    ("launch", "--processes", "2"),
    ("launch", "--processes", "2", "--", "generate", *TINY, "--coordinator", "127.0.0.1:5"),
    ("launch", "--processes", "3", "--", "generate", *TINY),
    # -- no command ------------------------------------------------------------------------------
    ("fly",),
    (),
]


@pytest.fixture
def places(tmp_path):
    file = tmp_path / "afile"
    file.write_text("not a folder\n")
    (tmp_path / "adir").mkdir()
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("this is = = not toml\n")
    bad_model = tmp_path / "badmodel.toml"
    from jaxpart.config import resolve

    shipped = resolve("dense16-tiny", "models")
    bad_model.write_text(shipped.read_text().replace("n_layers = 16", "n_layers = -4"))
    ids = tmp_path / "ids.jsonl"
    ids.write_text("[1, 2, 3]\n[4, 999999]\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    damaged = tmp_path / "damaged"
    (damaged / "3").mkdir(parents=True)
    (damaged / "3" / "garbage").write_text("x")
    return {
        "file": str(file),
        "dir": str(tmp_path / "adir"),
        "out": str(tmp_path / "out"),
        "missing": str(tmp_path / "missing"),
        "bad_toml": str(bad_toml),
        "bad_model": str(bad_model),
        "ids": str(ids),
        "empty": str(empty),
        "damaged": str(damaged),
    }


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100
    assert len(set(CASES)) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c)[:80] or "(none)" for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, places, capsys, tmp_path):
    before = {p for p in tmp_path.rglob("*")}
    argv = [a.format(**places) for a in case]
    code = main(argv)
    out, err = capsys.readouterr()
    text = out + err
    assert code == 2, text[-2000:]
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) <= 2, text
    assert err.startswith("jaxpart: error:") or err.startswith("usage:") or not err, err
    after = {p for p in tmp_path.rglob("*")}
    assert after == before, f"left behind: {sorted(map(str, after - before))}"
