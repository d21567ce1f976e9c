"""The memory model against the seed's dims, worked by hand (GB = 10^9 bytes)."""

from jaxpart.config import load_model
from jaxpart.memory import (
    EVERYTHING,
    RESIDENT,
    STATED,
    discrepancies,
    layer_fit_bytes,
    layer_memory,
    valid_splits,
)


def test_dense16_derived_figures():
    mem = layer_memory(load_model("dense16"))
    assert mem.params == 4 * 4096**2 + 2 * 4096 * 16384 == 201_326_592
    assert mem.weight_bytes == 402_653_184  # 0.40 GB
    assert mem.prefill_activation_bytes == 128 * 10000 * 4096 * 2 == 10_485_760_000  # 10.49 GB
    assert mem.kv_cache_bytes == 2 * 128 * 10000 * 32 * 128 * 2 == 20_971_520_000  # 20.97 GB
    assert mem.decode_hidden_bytes == 128 * 4096 * 2
    assert mem.buffer_bytes == 500_000_000


def test_dense16_stated_total_is_the_seeds():
    assert layer_fit_bytes(load_model("dense16"), STATED) == 14_730_000_000


def test_fit_definitions():
    model = load_model("dense16")
    mem = layer_memory(model)
    assert layer_fit_bytes(model, RESIDENT) == mem.weight_bytes + mem.decode_working_bytes
    assert layer_fit_bytes(model, EVERYTHING) == (
        mem.weight_bytes + mem.kv_cache_bytes + mem.prefill_activation_bytes + mem.buffer_bytes
    )


def test_split_divides_weights_and_kv_but_not_the_hidden_state():
    model = load_model("dense16")
    one, eight = layer_memory(model, 1), layer_memory(model, 8)
    assert eight.weight_bytes * 8 == one.weight_bytes
    assert eight.kv_cache_bytes * 8 == one.kv_cache_bytes
    assert eight.prefill_activation_bytes == one.prefill_activation_bytes
    assert 8 in valid_splits(model) and 3 not in valid_splits(model)


def test_l2_model_layer_is_about_25_mb():
    mem = layer_memory(load_model("dense16-l2"))
    assert mem.weight_bytes == 25_165_824


def test_discrepancies_named():
    lines = discrepancies(load_model("dense16"))
    text = " ".join(lines)
    assert "201,326,592" in text and "30B" in text and "3.22B" in text
    assert "KV cache: 20.97 GB" in text and "leaves out" in text
    assert discrepancies(load_model("dense16-tiny")) == []


def test_grouped_kv_heads_size_the_kv_cache():
    from jaxpart.memory import kv_heads_per_device, layer_memory, valid_splits

    llama = load_model("llama3.1-70b")
    mem = layer_memory(llama)
    # 2 x B x S x 8 K/V heads x 128 x 2 bytes, not 64 heads' worth
    assert mem.kv_cache_bytes == 2 * 64 * 4096 * 8 * 128 * 2
    # q and o: 8192 x 8192 each; k and v: 8192 x 1024 each; gate, up and down: 8192 x 28672
    assert mem.params == 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672
    # TP8 splits the 8 K/V heads; TP16 copies each to the 2 ranks that share it.
    assert kv_heads_per_device(llama, 8) == 1 and kv_heads_per_device(llama, 16) == 1
    assert layer_memory(llama, 16).kv_cache_bytes == mem.kv_cache_bytes // 8
    assert 16 in valid_splits(llama) and 3 not in valid_splits(llama)
    tiny = load_model("gqa-tiny")
    assert layer_memory(tiny, 8).kv_cache_bytes == layer_memory(tiny).kv_cache_bytes // 2


def test_plan_prints_the_grouped_kv_bytes(capsys):
    from jaxpart.cli import main

    assert main(["plan", "--model", "llama3.1-70b", "--mesh", "h100x16"]) == 0
    out = capsys.readouterr().out
    assert "1.07 GB" in out  # 2 x 64 x 4096 x 8 x 128 x 2 bytes = 1,073,741,824


def test_fp8_weights_and_cache_halve_their_bytes():
    bf16, fp8 = load_model("llama3.1-70b"), load_model("llama3.1-70b-fp8")
    assert (fp8.dtype, fp8.weight_dtype, fp8.kv_dtype) == ("bfloat16",) + ("float8_e4m3fn",) * 2
    a, b = layer_memory(bf16), layer_memory(fp8)
    assert b.weight_bytes * 2 == a.weight_bytes and b.kv_cache_bytes * 2 == a.kv_cache_bytes
    assert b.prefill_activation_bytes == a.prefill_activation_bytes  # activations stay bf16
