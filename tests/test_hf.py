"""Hugging Face folders: config.json into a model, safetensors into the canonical layout, and
the same logits and tokens as transformers' LlamaForCausalLM (golden file from
scripts/hf_golden.py) through the reference, TP8xPP2 and layer-wise."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from jaxpart.cli import main
from jaxpart.config import ConfigError, RunShape, load_mesh, load_model
from jaxpart.runtime.engine import generate

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tiny", ROOT / "tests" / "tiny_checkpoints.py")
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)
GOLDEN = json.loads((ROOT / "tests" / "golden" / "hf_tiny.json").read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: tiny.write_checkpoint(root / name, name) for name in tiny.VARIANTS}


def test_windows_are_read_per_layer(folders):
    # Mistral's and Phi-3's window is on every layer; Qwen2's from max_window_layers up, and
    # Gemma's on the layers its layer_types call sliding (five in six for Gemma 3)
    for name, window in (("mistral-window", 5), ("phi3-tiny", 6)):
        cfg = load_model(str(folders[name]))
        assert (cfg.sliding_window, cfg.layer_windows, cfg.seq_len) == (window, (), 64)
    qwen = load_model(str(folders["qwen2-window"]))
    assert qwen.layer_windows == (0,) * 8 + (5,) * 8 and qwen.seq_len == 64
    gemma = load_model(str(folders["gemma3-tiny"]))
    assert gemma.layer_windows == tuple(0 if (i + 1) % 6 == 0 else 5 for i in range(16))
    assert (gemma.local_rope_theta, gemma.rope_theta) == (10_000.0, 1_000_000.0)
    assert gemma.rope_scaling.type == "linear" and gemma.rope_scaling.factor == 8.0
    assert load_model(str(folders["gemma3-tiny-v5"])).layer_windows == gemma.layer_windows
    assert load_model(str(folders["llama-tiny-untied"])).layer_windows == ()


def test_rope_scaling_is_read_from_both_key_layouts(folders):
    old, new = (load_model(str(folders[n])) for n in ("llama31-rope", "llama31-rope-v5"))
    assert old.rope_scaling == new.rope_scaling and old.rope_scaling.type == "llama3"
    assert old.rope_theta == new.rope_theta == 500000.0 and new.dtype == "float32"
    assert load_model(str(folders["llama-theta5e5-v5"])).rope_theta == 500000.0
    phi = load_model(str(folders["phi3-longrope"])).rope_scaling
    assert (phi.type, phi.original_max) == ("longrope", 10)  # the top-level value wins
    dynamic = load_model(str(folders["llama-dynamic"]))
    assert dynamic.seq_len == 20  # max_position_embeddings 10 x factor 2: it scales into it


def test_config_json_becomes_a_model(folders):
    cfg = load_model(str(folders["llama-tiny-untied"]))
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (
        16,
        128,
        8,
        2,
        16,
    )
    assert (cfg.mlp, cfg.tie_embeddings, cfg.norm_eps, cfg.dtype) == (
        "swiglu",
        False,
        1e-5,
        "float32",
    )
    assert load_model(str(folders["llama-tiny-tied"])).tie_embeddings is True
    assert load_model(str(folders["qwen2-tiny"])).attention_bias is True
    assert load_model(str(folders["qwen3-tiny"])).qk_norm is True


@pytest.mark.parametrize("variant", sorted(tiny.VARIANTS))
@pytest.mark.parametrize("method", ["reference", "baseline", "layerwise"])
def test_logits_and_tokens_equal_transformers(folders, variant, method):
    cfg = load_model(str(folders[variant]))
    golden = GOLDEN["variants"][variant]
    prompts = np.array(GOLDEN["prompts"])
    shape = RunShape(len(prompts), prompts.shape[1], GOLDEN["gen_len"])
    tokens, logits, _ = generate(method, cfg, load_mesh("cpu16"), shape, prompts=prompts)
    np.testing.assert_allclose(logits, np.array(golden["first_logits"]), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(tokens, np.array(golden["tokens"]))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            "field 'rope_scaling': rope type 'llama3' needs field 'low_freq_factor'",
        ),
        ({"rope_scaling": {"type": "su", "factor": 2.0}}, "rope type 'su' is not implemented"),
        (
            {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "alpha": 1.0}},
            "field 'alpha' = 1.0: not a rope parameter",
        ),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "default"}}},
            "field 'full_attention'",
        ),
        ({"rope_scaling": {"type": "linear"}}, "rope type 'linear' needs field 'factor'"),
        ({"dtype": "int8"}, "field 'dtype' = 'int8'"),
        ({"use_bidirectional_attention": True}, "field 'use_bidirectional_attention' = True"),
        ({"model_type": "gemma3"}, "field 'model_type' = 'gemma3'"),
        ({"model_type": "mixtral"}, "field 'model_type' = 'mixtral'"),
        ({"num_local_experts": 8}, "field 'num_local_experts' = 8"),
        ({"hidden_act": "gelu"}, "field 'hidden_act' = 'gelu'"),
        ({"attention_bias": True}, "field 'attention_bias' = True"),
        ({"mlp_bias": True}, "field 'mlp_bias' = True"),
        ({"model_type": "mistral", "sliding_window": "wide"}, "field 'sliding_window' = 'wide'"),
        ({"model_type": "phi3", "sliding_window": 0}, "field 'sliding_window' = 0"),
        ({"partial_rotary_factor": 0.5}, "field 'partial_rotary_factor' = 0.5"),
        ({"num_key_value_heads": 3}, "field 'n_kv_heads' = 3"),
    ],
)
def test_an_unsupported_feature_is_one_line_naming_it(tmp_path, capsys, change, fragment):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**tiny.config(False), **change}))
    assert main(["plan", "--model", str(folder), "--mesh", "cpu16"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_folder_without_weights_plans_but_says_so_when_run(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny.config(False)))
    assert main(["plan", "--model", str(folder), "--mesh", "cpu16"]) == 0
    with pytest.raises(ConfigError, match="without config.json"):
        load_model(str(tmp_path))


def test_a_sharded_checkpoint_with_an_index_loads_the_same_weights(folders, tmp_path):
    import jax
    from safetensors.numpy import load_file, save_file

    from jaxpart.io.weights import load_hf_params
    from jaxpart.model.decoder import init_params

    def model_params(cfg, seed):
        return load_hf_params(
            cfg.source.rsplit("/", 1)[0], cfg, jax.eval_shape(lambda: init_params(cfg, seed))
        )

    source = folders["llama-tiny-untied"]
    tensors = load_file(str(source / "model.safetensors"))
    names = sorted(tensors)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((source / "config.json").read_text())
    weight_map = {}
    for part, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-0000{part + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in chunk}, str(sharded / file))
        weight_map.update({n: file for n in chunk})
    index = {"metadata": {}, "weight_map": weight_map}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    whole = model_params(load_model(str(source)), 0)
    parts = model_params(load_model(str(sharded)), 0)
    for key in ("embed", "head", "final_norm"):
        np.testing.assert_array_equal(parts[key], whole[key])
    for key, value in whole["layers"].items():
        np.testing.assert_array_equal(parts["layers"][key], value)
    # q_proj [H*K, d] became wq [d, H, K]: layer 3's head 5 is rows 80..96 of the HF tensor.
    q = tensors["model.layers.3.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(whole["layers"]["wq"][3][:, 5, :], q[80:96].T)


def test_text_round_trips_through_the_tokenizer(folders, tmp_path, capsys):
    from jaxpart.io.text import decode, encode, tokenizer_for

    cfg = load_model(str(folders["llama-tiny-untied"]))
    tokenizer = tokenizer_for(cfg)
    ids = encode(tokenizer, ["w1 w2 w3", "w7 w8 w9"], cfg.vocab)
    np.testing.assert_array_equal(ids, [[4, 5, 6], [10, 11, 12]])
    assert decode(tokenizer, ids[1]) == "w7 w8 w9"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w1 w2 w3\n\nw7 w8 w9\n")
    out_json = tmp_path / "g.json"
    args = ["generate", "--model", str(folders["llama-tiny-untied"]), "--mesh", "cpu16"]
    code = main([*args, "--prompts", str(prompts), "--gen-len", "3", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["text"] == [decode(tokenizer, row) for row in doc["tokens"]]
    assert f"'w7 w8 w9' -> {doc['text'][1]!r}" in out
    # Prompts of different lengths share a batch; each gets what it gets alone.
    ragged = ["--text", "w1 w2 w3 w4 w5", "--text", "w7", "--gen-len", "3"]
    assert main([*args, *ragged, "--json", str(out_json)]) == 0
    together = json.loads(out_json.read_text())["tokens"]
    alone = ["--text", "w7", "--gen-len", "3", "--method", "reference"]
    assert main([*args, *alone, "--json", str(out_json)]) == 0
    assert together[1] == json.loads(out_json.read_text())["tokens"][0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "dense16-tiny", "--text", "hello"], "has no tokenizer.json"),
        (["--text", "w1", "--stop-tokens", "999999"], "--stop-tokens = 999999: outside the vocab"),
        (["--text", "w1", "--prompt", "1,2"], "--text/--prompts and --prompt: give one of them"),
        (["--prompts", "/nonexistent/p.txt"], "--prompts = '/nonexistent/p.txt': cannot read"),
    ],
)
def test_bad_text_input(folders, capsys, args, fragment):
    model = ["--model", str(folders["llama-tiny-untied"])] if "--model" not in args else []
    assert main(["generate", *model, "--mesh", "cpu16", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_chat_prompts_equal_apply_chat_template(tmp_path, capsys):
    # The folder's chat template renders each text as a user turn, as transformers'
    # apply_chat_template(add_generation_prompt=True, tokenize=True) does (golden file).
    from jaxpart.io.text import decode, encode, tokenizer_for

    folder = tiny.write_chat(tiny.write_checkpoint(tmp_path / "chat", "llama-tiny-untied"))
    cfg = load_model(str(folder))
    tokenizer = tokenizer_for(cfg)
    expected = GOLDEN["chat"]
    got = encode(tokenizer, tiny.CHAT_TEXTS, cfg.vocab, folder)
    assert got == [expected[t] for t in tiny.CHAT_TEXTS]
    assert got[0] != encode(tokenizer, tiny.CHAT_TEXTS[:1], cfg.vocab)[0]  # not the raw text
    args = ["generate", "--model", str(folder), "--mesh", "cpu16", "--method", "reference"]
    assert main([*args, "--chat", "--text", "Hi", "--gen-len", "2"]) == 0
    assert repr(decode(tokenizer, expected["Hi"])) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--chat", "--prompt", "1,2"], "--chat renders text prompts"),
        (["--chat", "--text", "Hi"], "has no chat template"),
    ],
)
def test_chat_without_text_or_template_is_one_line(tmp_path, capsys, argv, words):
    folder = tiny.write_checkpoint(tmp_path / "plain", "llama-tiny-untied")
    args = ["generate", "--model", str(folder), "--mesh", "cpu16", "--method", "reference"]
    assert main([*args, *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_template_that_raises_is_one_line(tmp_path):
    from jaxpart.io.chat import render

    folder = tiny.write_chat(tiny.write_checkpoint(tmp_path / "chat", "llama-tiny-untied"))
    text = (folder / "tokenizer_config.json").read_text().replace("'system'", "'user'")
    (folder / "tokenizer_config.json").write_text(text)
    with pytest.raises(ConfigError, match="failed: no system turns"):
        render(folder, "Hi")


def test_plan_on_a_gemma3_folder_shows_its_local_and_global_kv(folders, capsys):
    assert main(["plan", "--model", str(folders["gemma3-tiny"]), "--mesh", "cpu16"]) == 0
    out = capsys.readouterr().out
    # 14 local layers of window 5 and 2 global ones: the cache held to the windows, and what
    # jaxpart allocates (every layer's whole context of 64 positions)
    assert "sliding windows on 14 of 16 layers" in out
    cfg = load_model(str(folders["gemma3-tiny"]))
    from jaxpart.cli.render import window_kv_line

    line = window_kv_line(cfg, RunShape(16, 32, 32))
    assert "14 of 16" in line and load_model(str(folders["llama-tiny-untied"])).sliding_window == 0
    assert window_kv_line(load_model(str(folders["llama-tiny-untied"])), RunShape(1, 4, 4)) == ""
