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
