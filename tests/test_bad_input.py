"""Every bad input is one line and exit 2, checked before any work, and leaves no output file.

Placeholders: {file} a regular file, {dir} a folder, {out} a fresh path for an output,
{missing} a path that does not exist, {bad_toml} a file that is not TOML, {bad_model} a model
file with a field out of range, {ids} a prompts file with a token outside the vocab,
{empty} an empty prompts file, {damaged} a checkpoint folder with a damaged step; and
``_damaged_places``: copies of good inputs (a model, a mesh, a calibration, prompts, a tiny
Hugging Face folder) and damaged ones. Every case also leaves every file byte-identical.
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
    # -- nothing the user had is lost (outputs onto inputs, damaged files, sizes, the system) ----
    # an output written over an input, or two outputs on one path
    ("plan", "--model", "{model_copy}", "--mesh", "cpu16", "--json", "{model_copy}"),
    ("plan", *POD, "--mesh", "{mesh_copy}", "--json", "{mesh_copy}"),
    ("simulate", *POD, "--calibration", "{calib}", "--json", "{calib}"),
    ("generate", *TINY, "--prompts", "{prompts_text}", "--json", "{prompts_text}"),
    ("generate", "--model", "{hf}", "--json", "{hf}/config.json"),
    ("generate", "--model", "{hf}", "--json", "{hf}/model.safetensors"),
    ("compare", "--json", "{out}.png", "--plot", "{out}.png"),
    ("plan", *POD, "--json", "{link_to_model}", "--model", "{model_copy}"),
    # damaged Hugging Face folders: one line naming the file
    ("generate", "--model", "{hf_truncated}"),
    ("generate", "--model", "{hf_lying}"),
    ("generate", "--model", "{hf_header_not_json}"),
    ("plan", "--model", "{hf_config_cut}", "--mesh", "cpu16"),
    ("plan", "--model", "{hf_config_list}", "--mesh", "cpu16"),
    ("generate", "--model", "{hf_index_no_map}"),
    ("plan", "--model", "{hf_zero_heads}", "--mesh", "cpu16"),
    ("plan", "--model", "{hf_float_layers}", "--mesh", "cpu16"),
    ("plan", "--model", "{hf_string_hidden}", "--mesh", "cpu16"),
    ("generate", "--model", "{hf_head_dim}"),
    ("generate", "--model", "{hf_int_tensor}"),
    ("generate", "--model", "{hf_loop}"),
    ("generate", "--model", "{hf_dangling}"),
    ("generate", "--model", "{hf_no_weights}"),
    ("generate", "--model", "{hf_gptq}"),
    ("plan", "--model", "{hf_fp8_bad_block}", "--mesh", "cpu16"),
    ("generate", "--model", "{hf_fp8_no_scale}"),
    ("generate", "--model", "{hf}", "--prompts", "{prompts_mixed}"),
    ("generate", "--model", "{hf_bad_tokenizer}", "--text", "w5"),
    ("generate", "--model", "{hf_bad_generation_config}", "--text", "w5"),
    # calibration and mesh files with NaN, infinite, negative or string values
    ("simulate", *POD, "--calibration", "{calib_nan}"),
    ("simulate", *POD, "--calibration", "{calib_negative}"),
    ("simulate", *POD, "--calibration", "{calib_string}"),
    ("simulate", *POD, "--calibration", "{calib_list}"),
    ("simulate", "--model", "dense16", "--mesh", "{mesh_nan}"),
    ("simulate", "--model", "dense16", "--mesh", "{mesh_inf}"),
    ("simulate", "--model", "dense16", "--mesh", "{mesh_negative}"),
    ("simulate", "--model", "dense16", "--mesh", "{mesh_string}"),
    ("plan", "--model", "{model_float_layers}", "--mesh", "cpu16"),
    # sizes: refused by the memory model before any loop
    ("simulate", "--batch", "1000000000"),
    ("generate", *TINY, "--method", "layerwise", "--batch", "1000000000"),
    ("generate", *TINY, "--method", "reference", "--batch", "100000000"),
    ("compare", "--batch", "1000000000"),
    ("verify", *POD, "--batch", "1000000000"),
    # the system's refusals: a name too long (a full device: test_a_full_device_is_one_line)
    ("plan", *POD, "--json", "{long_name}"),
    ("simulate", *POD, "--json", "{long_name}"),
    # checkpoints know what they belong to
    ("train", "--checkpoint", "{hf}", "--steps", "2"),
    # checked before the work, not after
    ("compare", "--predict-for", "dense16", "cpu16"),
    # values that pass a range check but vanish in float32
    ("generate", *TINY, "--temperature", "1e-45"),
    ("generate", *TINY, "--top-p", "1e-300"),
    ("generate", *TINY, "--quantize", "int4"),
    ("generate", "--model", "llama3.1-70b-fp8", "--quantize", "fp8"),
    ("generate", *TINY, "--kv-dtype", "int8"),
    # -- no command ------------------------------------------------------------------------------
    ("fly",),
    (),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One folder of inputs for every case (made once: the Hugging Face folders take time)."""
    return tmp_path_factory.mktemp("places")


@pytest.fixture(scope="module")
def places(root):
    tmp_path = root
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
    places = _damaged_places(tmp_path)
    return places | {
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


def _damaged_places(tmp_path) -> dict[str, str]:
    """Copies of good inputs, and damaged ones: Hugging Face folders, calibration, mesh and
    model files, prompts."""
    import json

    import numpy as np
    import tiny_checkpoints as tiny
    from safetensors.numpy import save_file

    from jaxpart.config import resolve

    out = {}
    model = tmp_path / "model.toml"
    model.write_text(resolve("dense16-tiny", "models").read_text())
    out["model_copy"] = str(model)
    (tmp_path / "link.toml").symlink_to(model)
    out["link_to_model"] = str(tmp_path / "link.toml")
    float_layers = tmp_path / "float_layers.toml"
    float_layers.write_text(model.read_text().replace("n_layers = 16", "n_layers = 2.5"))
    out["model_float_layers"] = str(float_layers)
    mesh_text = resolve("h100x16", "meshes").read_text()
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text)
    out["mesh_copy"] = str(mesh)
    for name, old, new in (
        ("mesh_nan", "peak_flops = 989e12", "peak_flops = nan"),
        ("mesh_inf", "peak_flops = 989e12", "peak_flops = inf"),
        ("mesh_negative", "latency_us = 10", "latency_us = -10"),
        ("mesh_string", "hbm_efficiency = 0.85", 'hbm_efficiency = "high"'),
    ):
        path = tmp_path / f"{name}.toml"
        assert old in mesh_text
        path.write_text(mesh_text.replace(old, new))
        out[name] = str(path)
    calib = {
        "platform": "gpu",
        "device": "NVIDIA H100 80GB HBM3",
        "ceilings": {"copy_bytes_per_s": 3.0e12, "matmul_flops_per_s": 7.0e14},
        "l2": {"fits_l2": {"effective_bytes_per_s": 5.0e12}},
        "mlp": [{"pallas": {"bytes_per_s": 2.9e12}}],
        "launch": {"per_launch_s": 4e-6},
    }
    for name, change in (
        ("calib", {}),
        ("calib_nan", {"ceilings": {"copy_bytes_per_s": "nan", "matmul_flops_per_s": 7e14}}),
        ("calib_negative", {"launch": {"per_launch_s": -1e-6}}),
        ("calib_string", {"mlp": [{"pallas": {"bytes_per_s": "fast"}}]}),
        ("calib_list", None),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(calib | change if change is not None else [calib]))
        out[name] = str(path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w5 w6\nw7\n")
    out["prompts_text"] = str(prompts)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("[1, 2, 3]\nw5 w6\n")
    out["prompts_mixed"] = str(mixed)
    out["long_name"] = str(tmp_path / ("x" * 300 + ".json"))

    hf = tiny.write_checkpoint(tmp_path / "hf", "llama-tiny-untied")
    out["hf"] = str(hf)
    weights = (hf / "model.safetensors").read_bytes()
    config = json.loads((hf / "config.json").read_text())

    def folder(name, config_text=None, weights_bytes=weights, files=None):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(
            json.dumps(config) if config_text is None else config_text
        )
        if weights_bytes is not None:
            (path / "model.safetensors").write_bytes(weights_bytes)
        for file, text in (files or {}).items():
            (path / file).write_text(text)
        out[name] = str(path)
        return path

    folder("hf_truncated", weights_bytes=weights[:5])
    size = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + size])
    first = next(k for k in header if k != "__metadata__")
    header[first]["shape"] = [n * 2 for n in header[first]["shape"]]
    lying = json.dumps(header).encode()
    folder("hf_lying", weights_bytes=len(lying).to_bytes(8, "little") + lying + weights[8 + size :])
    folder("hf_header_not_json", weights_bytes=(9).to_bytes(8, "little") + b"not json!")
    folder("hf_config_cut", config_text=json.dumps(config)[:40])
    folder("hf_config_list", config_text="[1, 2, 3]")
    folder(
        "hf_index_no_map",
        weights_bytes=None,
        files={"model.safetensors.index.json": '{"metadata": {}}'},
    )
    folder("hf_zero_heads", config_text=json.dumps(config | {"num_attention_heads": 0}))
    folder("hf_float_layers", config_text=json.dumps(config | {"num_hidden_layers": 2.5}))
    folder("hf_string_hidden", config_text=json.dumps(config | {"hidden_size": "128"}))
    folder("hf_head_dim", config_text=json.dumps(config | {"head_dim": 32}))
    folder(
        "hf_gptq",
        config_text=json.dumps(config | {"quantization_config": {"quant_method": "gptq"}}),
    )
    folder(
        "hf_fp8_bad_block",
        config_text=json.dumps(
            config | {"quantization_config": {"quant_method": "fp8", "weight_block_size": [0, 7]}}
        ),
    )
    fp8 = tiny.write_fp8_checkpoint(tmp_path / "fp8_source", "fbgemm")
    from jaxpart.io.tensorfile import TensorFile

    stored = TensorFile(fp8 / "model.safetensors")
    dropped = "model.layers.0.mlp.up_proj.weight_scale"
    kept = {n: stored.read(n) for n in stored.names if n != dropped}
    folder(
        "hf_fp8_no_scale",
        config_text=(fp8 / "config.json").read_text(),
        weights_bytes=None,
    )
    save_file(kept, str(tmp_path / "hf_fp8_no_scale" / "model.safetensors"))
    ints = tmp_path / "ints"

    tensors = tiny.tensors(config, 0)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
    ints.mkdir()
    save_file(tensors, str(ints / "model.safetensors"))
    folder("hf_int_tensor", weights_bytes=(ints / "model.safetensors").read_bytes())
    loop = folder("hf_loop", weights_bytes=None)
    (loop / "model.safetensors").symlink_to(loop / "other")
    (loop / "other").symlink_to(loop / "model.safetensors")
    dangling = folder("hf_dangling", weights_bytes=None)
    (dangling / "model.safetensors").symlink_to(tmp_path / "gone" / "model.safetensors")
    folder("hf_no_weights", weights_bytes=None)
    folder("hf_bad_tokenizer", files={"tokenizer.json": '{"version": "1.0", "model": '})
    tokenizer = (hf / "tokenizer.json").read_text()
    folder(
        "hf_bad_generation_config",
        files={"tokenizer.json": tokenizer, "generation_config.json": '{"eos_token_id": '},
    )
    return out


def _hashes(root) -> dict[str, str]:
    """Every file's content under ``root`` (links not followed), by path."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_symlink():
            out[str(path)] = "-> " + str(path.readlink())
    return out


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100
    assert len(set(CASES)) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c)[:80] or "(none)" for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, places, root, capsys):
    before = {p for p in root.rglob("*")}
    hashes = _hashes(root)
    argv = [a.format(**places) for a in case]
    code = main(argv)
    out, err = capsys.readouterr()
    text = out + err
    assert code == 2, text[-2000:]
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) <= 2, text
    assert err.startswith("jaxpart: error:") or err.startswith("usage:") or not err, err
    after = {p for p in root.rglob("*")}
    assert after == before, f"left behind: {sorted(map(str, after - before))}"
    assert _hashes(root) == hashes, "an input changed"


@pytest.mark.parametrize("command", [["plan", *POD], ["simulate", *POD]])
def test_a_full_device_is_one_line(command, capsys, tmp_path):
    """A disk that fills up can only refuse the write itself, after the work: the error is one
    line and exit 2, no traceback, and nothing is left half-written."""
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    code = main([*command, "--json", "/dev/full"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().splitlines() == [
        "jaxpart: error: cannot write /dev/full: No space left on device"
    ]
    assert not list(tmp_path.iterdir())
