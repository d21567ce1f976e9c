"""The memory model against the seed's dims, worked by hand (GB = 10^9 bytes)."""

from jaxpart.config import FitDefinition, default_run, load_model
from jaxpart.planning.memory import (
    discrepancies,
    layer_fit_bytes,
    layer_memory,
    valid_splits,
)


def test_dense16_derived_figures():
    mem = layer_memory(load_model("dense16"), default_run("dense16"))
    assert mem.params == 4 * 4096**2 + 2 * 4096 * 16384 == 201_326_592
    assert mem.weight_bytes == 402_653_184  # 0.40 GB
    assert mem.prefill_activation_bytes == 128 * 10000 * 4096 * 2 == 10_485_760_000  # 10.49 GB
    # K and V at the allocated positions: 10000 -> 10240, whole 128-position blocks in 4s
    assert mem.kv_cache_bytes == 2 * 128 * 10240 * 32 * 128 * 2 == 21_474_836_480  # 21.47 GB
    assert mem.decode_hidden_bytes == 128 * 4096 * 2
    assert mem.buffer_bytes == 500_000_000


def test_dense16_stated_total_is_the_seeds():
    assert (
        layer_fit_bytes(load_model("dense16"), default_run("dense16"), FitDefinition.STATED)
        == 14_730_000_000
    )


def test_fit_definitions():
    model, run = load_model("dense16"), default_run("dense16")
    mem = layer_memory(model, run)
    resident = layer_fit_bytes(model, run, FitDefinition.RESIDENT)
    assert resident == mem.weight_bytes + mem.decode_working_bytes
    # Activations, embedding, head and buffers are paid once per device, not per layer.
    everything = layer_fit_bytes(model, run, FitDefinition.EVERYTHING)
    assert everything == mem.weight_bytes + mem.kv_cache_bytes


def test_split_divides_weights_and_kv_but_not_the_hidden_state():
    model, run = load_model("dense16"), default_run("dense16")
    one, eight = layer_memory(model, run, 1), layer_memory(model, run, 8)
    assert eight.weight_bytes * 8 == one.weight_bytes
    assert eight.kv_cache_bytes * 8 == one.kv_cache_bytes
    assert eight.prefill_activation_bytes == one.prefill_activation_bytes
    assert 8 in valid_splits(model) and 3 not in valid_splits(model)


def test_l2_model_layer_is_about_25_mb():
    mem = layer_memory(load_model("dense16-l2"), default_run("dense16-l2"))
    assert mem.weight_bytes == 25_165_824


def test_discrepancies_named():
    lines = discrepancies(load_model("dense16"), default_run("dense16"))
    text = " ".join(lines)
    assert "201,326,592" in text and "30B" in text and "3.22B" in text
    assert "KV cache: 21.47 GB" in text and "leaves out" in text
    assert discrepancies(load_model("dense16-tiny"), default_run("dense16-tiny")) == []


def test_grouped_kv_heads_size_the_kv_cache():
    from jaxpart.planning.memory import kv_heads_per_device, layer_memory, valid_splits

    llama, run = load_model("llama3.1-70b"), default_run("llama3.1-70b")
    mem = layer_memory(llama, run)
    # 2 x B x S x 8 K/V heads x 128 x 2 bytes, not 64 heads' worth
    assert mem.kv_cache_bytes == 2 * 64 * 4096 * 8 * 128 * 2
    # q and o: 8192 x 8192 each; k and v: 8192 x 1024 each; gate, up and down: 8192 x 28672
    assert mem.params == 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672
    # TP8 splits the 8 K/V heads; TP16 copies each to the 2 ranks that share it.
    assert kv_heads_per_device(llama, 8) == 1 and kv_heads_per_device(llama, 16) == 1
    assert layer_memory(llama, run, 16).kv_cache_bytes == mem.kv_cache_bytes // 8
    assert 16 in valid_splits(llama) and 3 not in valid_splits(llama)
    tiny, tiny_run = load_model("gqa-tiny"), default_run("gqa-tiny")
    eight = layer_memory(tiny, tiny_run, 8).kv_cache_bytes
    assert eight == layer_memory(tiny, tiny_run).kv_cache_bytes // 2


def test_plan_prints_the_grouped_kv_bytes(capsys):
    from jaxpart.cli import main

    assert main(["plan", "--model", "llama3.1-70b", "--mesh", "h100x16"]) == 0
    out = capsys.readouterr().out
    assert "1.07 GB" in out  # 2 x 64 x 4096 x 8 x 128 x 2 bytes = 1,073,741,824


def test_fp8_weights_and_cache_halve_their_bytes():
    bf16, fp8 = load_model("llama3.1-70b"), load_model("llama3.1-70b-fp8")
    assert (fp8.dtype, fp8.weight_dtype, fp8.kv_dtype) == ("bfloat16",) + ("float8_e4m3fn",) * 2
    run = default_run("llama3.1-70b")
    assert default_run("llama3.1-70b-fp8") == run
    a, b = layer_memory(bf16, run), layer_memory(fp8, run)
    # half the matrices' bytes, an f32 scale per output channel of each of the 7 matrices and
    # the FP8 cache's scale per K/V head for K and V
    channels = 8192 + 2 * 1024 + 8192 + 2 * 28672 + 8192
    assert b.weight_bytes == a.weight_bytes // 2 + 4 * (channels + 2 * 8)
    assert b.kv_cache_bytes * 2 == a.kv_cache_bytes
    assert b.prefill_activation_bytes == a.prefill_activation_bytes  # activations stay bf16


def test_device_memory_by_hand():
    from jaxpart.planning.memory import device_memory

    # dense16's layer-wise stage on an H100: 1 layer, batch 128 cached, microbatches of 8
    # sequences with a 9872-token prompt, flash attention (no scores), bf16.
    model = load_model("dense16")
    dev = device_memory(model, 1, 1, cache_rows=128, rows=8, prompt_len=9872)
    tokens = 8 * 9872
    assert dev.weights == 402_653_184 + 2 * 4096 * 2  # its matrices and its two norms
    assert dev.kv_cache == 2 * 128 * 10240 * 4096 * 2
    assert dev.embedding_and_head == (2 * 32000 * 4096 + 4096) * 2
    # hidden (bf16) + 2 f32 hidden + q, k, v + one 4096-row chunk of f32 MLP hidden + logits
    prefill = tokens * 4096 * (2 + 2 * 4) + tokens * 3 * 4096 * 2 + 4096 * 16384 * 4
    assert dev.prefill_activations == prefill + 8 * 32000 * 4
    assert dev.activations == dev.prefill_activations > dev.decode_activations
    assert dev.total == dev.weights + dev.kv_cache + dev.embedding_and_head + prefill + (
        8 * 32000 * 4 + 500_000_000
    )
    # The XLA prefill adds its f32 scores: rows x heads x 512 queries x prompt.
    xla = device_memory(model, 1, 1, cache_rows=128, rows=8, prompt_len=9872, attention="xla")
    assert xla.prefill_activations - dev.prefill_activations == 8 * 32 * 512 * 9872 * 4
    # A CPU compile adds the f32 copies of the embedding and one layer's MLP.
    cpu = device_memory(model, 1, 1, cache_rows=128, rows=8, prompt_len=9872, platform="cpu")
    assert cpu.cpu_widening == (32000 * 4096 + 2 * 4096 * 16384) * 4


def test_the_planner_reserves_the_device_overhead_once():
    from jaxpart.config import load_mesh
    from jaxpart.planning.plan import device_overhead, make_plan, microbatch_rows

    model, mesh, run = load_model("dense16"), load_mesh("h100x16"), default_run("dense16")
    plan = make_plan(model, mesh, run)
    rows = microbatch_rows(run, plan.data_parallel, plan.n_stages)
    per_layer = layer_fit_bytes(model, run, FitDefinition.EVERYTHING)
    hbm = mesh.tiers["hbm"].capacity_bytes
    for stage in plan.stages:
        # what the stage holds fits, with its own microbatch's activations
        held = len(stage.layers) * per_layer + device_overhead(model, mesh, run, 1, rows)
        assert held <= stage.bytes_by_tier["hbm"] <= hbm


def test_a_batch_too_large_for_the_pod_is_refused_by_the_kv_floor():
    import pytest

    from jaxpart.config import ConfigError, RunShape, load_mesh
    from jaxpart.planning.memory import check_pod

    model, mesh = load_model("dense16"), load_mesh("h100x16")
    # 16 layers x 2 x 10240 positions x 4096 x 2 bytes = 2.68 GB a sequence; 1.28 TB of HBM
    check_pod(model, mesh, RunShape(474, 9872, 128))
    with pytest.raises(ConfigError, match="--batch = 475: .* at most 474 sequences fit"):
        check_pod(model, mesh, RunShape(475, 9872, 128))
