"""Configs: every shipped file loads; sizes parse exactly; bad files name the field and value."""

import pytest

from jaxpart.config import (
    ConfigError,
    RunShape,
    default_run,
    load_mesh,
    load_model,
    parse_size,
    resolve,
    serving_default,
    shipped,
)


@pytest.mark.parametrize("path", shipped("models"), ids=lambda p: p.stem)
def test_every_shipped_model_loads(path):
    model = load_model(str(path))
    assert model.n_heads % 8 == 0, "the TP=8 baseline must divide the heads"
    assert model.n_heads % model.n_kv_heads == 0
    assert model.n_kv_heads % 8 == 0 or 8 % model.n_kv_heads == 0
    text = path.read_text()
    assert text.startswith("#") and "jaxpart " in text, "a header naming the source and a command"


def test_real_architectures_ship_with_their_public_dims():
    llama = load_model("llama3.1-70b")
    assert (llama.n_layers, llama.d_model, llama.n_heads, llama.n_kv_heads, llama.d_ff) == (
        80,
        8192,
        64,
        8,
        28672,
    )
    assert (llama.mlp, llama.tie_embeddings, llama.rope_theta, llama.norm_eps) == (
        "swiglu",
        False,
        500000.0,
        1e-5,
    )
    # Llama 3.1's rope_scaling block, as its config.json writes it
    s = llama.rope_scaling
    assert (s.type, s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max) == (
        "llama3",
        8.0,
        1.0,
        4.0,
        8192,
    )
    assert load_model("llama3.1-405b").d_model == 16384
    assert load_model("qwen2.5-72b").d_ff == 29568
    tiny = load_model("gqa-tiny")
    assert (tiny.n_kv_heads, tiny.mlp, tiny.tie_embeddings) == (2, "swiglu", True)
    assert load_model("dense16").n_kv_heads == 32 and load_model("dense16").mlp == "gelu"


@pytest.mark.parametrize("path", shipped("meshes"), ids=lambda p: p.stem)
def test_every_shipped_mesh_loads(path):
    mesh = load_mesh(str(path))
    assert mesh.n_devices in (8, 16)
    if mesh.platform == "gpu":  # the perf model's constants, with where they come from
        t = mesh.timing
        assert t.source and 0 < t.hbm_efficiency <= 1 and 0 < t.compute_efficiency <= 1
    caps = [mesh.tiers[t].capacity_bytes for t in ("smem", "l2", "hbm")]
    assert caps == sorted(caps)


def test_names_resolve_to_shipped_files():
    assert resolve("dense16", "models").name == "dense16.toml"
    assert resolve("h100x16", "meshes").name == "h100x16.toml"
    assert load_model("dense16").stated.weight_bytes == 3_750_000_000


def test_a_model_without_a_run_table_gets_the_serving_default(tmp_path):
    text = GOOD_MODEL[: GOOD_MODEL.index("[run]")]
    path = write_model(tmp_path, text)
    assert default_run(path) == serving_default(16) == RunShape(16, 8, 8)
    assert load_model(path).seq_len == 16


def test_names_resolve_from_any_directory_and_paths_still_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_model("dense16").d_model == 4096 and load_mesh("cpu16").n_devices == 16
    (tmp_path / "mine.toml").write_text(GOOD_MODEL)
    assert load_model("mine.toml").name == "mine"
    assert load_model(str(tmp_path / "mine.toml")).d_model == 64


@pytest.mark.parametrize(
    "shape, fragment",
    [
        (dict(batch=0, prompt_len=4, gen_len=4), "--batch = 0"),
        (dict(batch=2, prompt_len=-1, gen_len=4), "--prompt-len = -1"),
        (dict(batch=2, prompt_len=4, gen_len=4, microbatches=0), "--microbatches = 0"),
    ],
)
def test_run_shape_validates_itself(shape, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunShape(**shape)


def test_run_shape_context_check_names_the_flag():
    model = load_model("dense16-tiny")
    assert RunShape(16, 32, 32).check(model).context == 64
    with pytest.raises(ConfigError, match="--gen-len = 40: prompt 32 \\+ generation 40"):
        RunShape(16, 32, 40).check(model)
    with pytest.raises(ConfigError, match="--prompt-len = 64"):
        RunShape(16, 64, 4).check(model)


def test_seed_model_dims():
    m = load_model("dense16")
    assert (m.n_layers, m.d_model, m.n_heads, m.head_dim, m.d_ff) == (16, 4096, 32, 128, 16384)
    assert (m.dtype, m.seq_len) == ("bfloat16", 10000)
    assert default_run("dense16") == RunShape(batch=128, prompt_len=9872, gen_len=128)
    st = m.stated
    assert st.total_params == 30_000_000_000
    assert (st.weight_bytes, st.activation_bytes, st.buffer_bytes) == (
        3_750_000_000,
        10_480_000_000,
        500_000_000,
    )


def test_h100_mesh_figures():
    mesh = load_mesh("h100x16")
    assert (mesh.hosts, mesh.devices_per_host) == (2, 8)
    assert mesh.tiers["hbm"].capacity_bytes == 80 * 10**9
    assert mesh.tiers["hbm"].bandwidth_bytes_per_s == 3.35e12
    assert mesh.tiers["l2"].capacity_bytes == 50 * 2**20
    assert mesh.peak_flops == 989e12
    assert mesh.intra_host.bandwidth_bytes_per_s > mesh.inter_host.bandwidth_bytes_per_s


@pytest.mark.parametrize(
    "text, expected",
    [
        ("14.73GB", 14_730_000_000),
        ("29.46 GB", 29_460_000_000),
        ("50MiB", 52_428_800),
        ("1.5GiB", 1_610_612_736),
        ("4096", 4096),
        ("227 KiB", 232_448),
        ("2e3 B", 2000),
        (1024, 1024),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("-3GB", "must be positive"),
        ("12XB", "unknown unit 'XB'"),
        ("big", "expected a size"),
        ("0", "must be positive"),
        ("", "expected a size"),
    ],
)
def test_parse_size_rejects(text, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        parse_size(text, "--capacity")
    assert "--capacity" in str(e.value) and "\n" not in str(e.value)


GOOD_MODEL = """
[model]
n_layers = 4
d_model = 64
n_heads = 4
head_dim = 16
d_ff = 128
vocab = 32
dtype = "float32"
seq_len = 16

[run]
batch = 2
prompt_len = 4
gen_len = 4
"""


def write_model(tmp_path, text):
    path = tmp_path / "m.toml"
    path.write_text(text)
    return str(path)


def test_a_model_file_by_path(tmp_path):
    model = load_model(write_model(tmp_path, GOOD_MODEL))
    assert model.name == "m" and model.d_model == 64
    assert (model.n_kv_heads, model.mlp, model.tie_embeddings) == (4, "gelu", False)
    assert (model.rope_theta, model.norm_eps) == (10_000.0, 1e-6)
    # d_model need not be n_heads x head_dim (Gemma, Qwen3 and others decouple them).
    wide = load_model(write_model(tmp_path, GOOD_MODEL.replace("d_model = 64", "d_model = 96")))
    assert wide.d_model == 96 and wide.q_width == 64


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("d_model = 64\n", ""), "missing field 'model.d_model'"),
        (("d_ff = 128", "d_ff = -128"), "field 'd_ff' = -128"),
        (("n_layers = 4", "n_layers = 0"), "field 'n_layers' = 0"),
        (("batch = 2", 'batch = "two"'), "field 'run.batch' = 'two'"),
        (('dtype = "float32"', 'dtype = "int4"'), "field 'dtype' = 'int4'"),
        (("n_heads = 4", "n_heads = 4\nn_kv_heads = 3"), "field 'n_kv_heads' = 3: must divide"),
        (("n_heads = 4", "n_heads = 4\nn_kv_heads = 0"), "field 'n_kv_heads' = 0"),
        (("d_ff = 128", 'd_ff = 128\nmlp = "relu"'), "field 'mlp' = 'relu'"),
        (("d_ff = 128", "d_ff = 128\ntie_embeddings = 1"), "field 'tie_embeddings' = 1"),
        (("d_ff = 128", "d_ff = 128\nrope_theta = -1.0"), "field 'rope_theta' = -1.0"),
        (("d_ff = 128", "d_ff = 128\nnorm_eps = 0"), "field 'norm_eps' = 0"),
        (('dtype = "float32"', 'dtype = "float8_e4m3fn"'), "field 'dtype' = 'float8_e4m3fn'"),
        (
            ('dtype = "float32"', 'dtype = "float32"\nkv_dtype = "int8"'),
            "field 'kv_dtype' = 'int8'",
        ),
        (("gen_len = 4", "gen_len = 40"), "field 'run.gen_len' = 40"),
        (("seq_len = 16", "seq_len = 16\nbatch = 2"), "field 'model.batch' = 2: the run shape"),
        (("gen_len = 4", "gen_len = 4\nmicrobatches = 0"), "field 'run.microbatches' = 0"),
        (("vocab = 32", "vocab = 32\nvocabb = 3"), "unknown field 'model.vocabb'"),
        (("[model]", "[model"), "not valid TOML"),
        (("d_ff = 128", "d_ff = 128\nlayer_windows = [4, -1]"), "field 'layer_windows' = [4, -1]"),
        (("d_ff = 128", "d_ff = 128\nlayer_windows = [4, 0]"), "2 layer windows for 4 layers"),
        (
            ("d_ff = 128", 'd_ff = 128\nmlp = "geglu"\nattn_softcap = -1'),
            "field 'attn_softcap' = -1",
        ),
        (
            ("[run]", '[model.rope_scaling]\nrope_type = "su"\nfactor = 2.0\n\n[run]'),
            "model.rope_scaling: rope type 'su' is not implemented",
        ),
        (
            ("[run]", '[model.rope_scaling]\nrope_type = "linear"\nfactor = -2.0\n\n[run]'),
            "field 'factor' = -2.0: must be > 0",
        ),
        (
            ("[run]", '[model.rope_scaling]\nrope_type = "linear"\nfactr = 2.0\n\n[run]'),
            "field 'factr' = 2.0: not a rope parameter",
        ),
    ],
)
def test_bad_model_files_name_the_field(tmp_path, edit, fragment):
    path = write_model(tmp_path, GOOD_MODEL.replace(*edit))
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")) as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_missing_files():
    with pytest.raises(ConfigError, match="'nope': not a shipped name"):
        load_model("nope")
    with pytest.raises(ConfigError, match="no such file"):
        load_mesh("/nonexistent/mesh.toml")


def test_bad_mesh_tier_order(tmp_path):
    text = (
        (resolve("cpu16", "meshes")).read_text().replace('capacity = "1 MiB"', 'capacity = "1 KiB"')
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must grow smem <= l2 <= hbm"):
        load_mesh(str(path))


def test_bad_mesh_negative_latency(tmp_path):
    text = resolve("cpu16", "meshes").read_text().replace("latency_us = 20", "latency_us = -1", 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"links.intra_host.latency_us' = -1"):
        load_mesh(str(path))
