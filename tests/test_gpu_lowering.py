"""The GPU path without a GPU: a decoder layer lowered for CUDA at dense16's prefill shapes, with
the kernels ``auto`` picks on a GPU, makes no buffer larger than twice the layer's input."""

import jax
import jax.numpy as jnp
import pytest

from jaxpart.config import default_run, load_mesh, load_model
from jaxpart.measure.verify import gpu_kernels, largest_intermediate
from jaxpart.model.layers import run_layers
from jaxpart.planning.memory import cache_positions

GPU = gpu_kernels(load_mesh("h100x16"))


def lowered_layer_text(rows, prompt, d, heads, head_dim, d_ff, seq_len, dtype=jnp.bfloat16):
    s = jax.ShapeDtypeStruct
    layers = {
        "ln1": s((1, d), dtype),
        "wq": s((1, d, heads, head_dim), dtype),
        "wk": s((1, d, heads, head_dim), dtype),
        "wv": s((1, d, heads, head_dim), dtype),
        "wo": s((1, heads, head_dim, d), dtype),
        "ln2": s((1, d), dtype),
        "w1": s((1, d, d_ff), dtype),
        "w2": s((1, d_ff, d), dtype),
    }
    cache = s((heads, 1, rows, cache_positions(seq_len), head_dim), dtype)
    x = s((rows, prompt, d), dtype)

    def prefill(layers, x, k, v):
        return run_layers(layers, x, k, v, 0, kernel=GPU)

    lowered = jax.jit(prefill).trace(layers, x, cache, cache).lower(lowering_platforms=("cuda",))
    return lowered.as_text()


@pytest.mark.parametrize(
    "placement, rows, split",
    [("layer-wise microbatch", 8, 1), ("TP8 shard of the baseline's microbatch", 64, 8)],
)
def test_dense16_prefill_makes_no_buffer_over_twice_the_activation(placement, rows, split):
    cfg, prompt_len = load_model("dense16"), default_run("dense16").prompt_len
    text = lowered_layer_text(
        rows,
        prompt_len,
        cfg.d_model,
        cfg.n_heads // split,
        cfg.head_dim,
        cfg.d_ff // split,
        cfg.seq_len,
    )
    assert "__gpu$xla.gpu.triton" in text, "the Pallas flash attention runs the prompt"
    activation = rows * prompt_len * cfg.d_model * 2
    size, kind = largest_intermediate(text)
    assert size <= 2 * activation, f"{placement}: {kind} is {size / activation:.2f}x the input"


def test_largest_intermediate_finds_what_a_program_makes():
    x = jax.ShapeDtypeStruct((64, 32), jnp.float32)

    def f(x):
        return (x[:, :, None] * x[:, None, :]).sum(axis=0)  # makes 64 x 32 x 32 f32

    text = jax.jit(f).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    assert largest_intermediate(text) == (64 * 32 * 32 * 4, "64x32x32xf32")
    assert largest_intermediate(text, {"64x32x32xf32"})[0] < 64 * 32 * 32 * 4
