"""`jaxpart verify`: compile the full-size sharded programs from abstract arrays (no weights are
allocated) on simulated CPU devices, and set XLA's per-device memory beside the memory model's
prediction and the mesh's HBM."""

from __future__ import annotations

from jaxpart.config import MeshConfig, ModelConfig
from jaxpart.engine import PlanChoice, default_microbatches, plan_for
from jaxpart.layers import QUERY_CHUNK
from jaxpart.memory import embedding_params, layer_memory
from jaxpart.pipeline import PipelineExecutor, RunShape


def predicted_bytes(cfg: ModelConfig, executor: PipelineExecutor) -> dict:
    """Per device, by the memory model: weights, KV cache and the replicated embedding/head."""
    plan, t = executor.plan, executor.plan.split
    mem = layer_memory(cfg, t)
    rows = cfg.batch // plan.data_parallel
    kv_per_layer = 2 * rows * cfg.seq_len * (cfg.n_heads // t) * cfg.head_dim * cfg.dtype_bytes
    return {
        "weights": executor.lmax * mem.weight_bytes,
        "kv_cache": executor.lmax * kv_per_layer,
        "embedding_and_head": (embedding_params(cfg) + cfg.d_model) * cfg.dtype_bytes,
    }


def verify(
    cfg: ModelConfig,
    mesh: MeshConfig,
    method: str,
    choice: PlanChoice,
    *,
    prompt_len: int,
    gen_len: int,
    microbatches: int | None,
    progress=None,
) -> dict:
    plan = plan_for(method, cfg, mesh, choice)
    m = microbatches or default_microbatches(plan, cfg.batch)
    executor = PipelineExecutor(cfg, plan, RunShape(cfg.batch, prompt_len, gen_len, m))
    predicted = predicted_bytes(cfg, executor)
    predicted_args = sum(predicted.values())
    hbm = mesh.tiers["hbm"].capacity_bytes
    programs = {}
    for program in ("decode", "prefill"):
        if progress:
            progress(program)
        stats = executor.compiled(program).memory_analysis()
        args, out = stats.argument_size_in_bytes, stats.output_size_in_bytes
        alias, temp = stats.alias_size_in_bytes, stats.temp_size_in_bytes
        peak = args + out - alias + temp
        programs[program] = {
            "argument_bytes": args,
            "output_bytes": out,
            "alias_bytes": alias,
            "temp_bytes": temp,
            "peak_bytes": peak,
            "argument_bytes_over_predicted": args / predicted_args,
            "fits_hbm": peak <= hbm,
        }
    # The prefill's attention materialises f32 scores for one chunk of queries of a microbatch:
    # rows x heads x chunk x context. At full size this is the largest temporary.
    rows = cfg.batch // plan.data_parallel // m
    queries = min(prompt_len, QUERY_CHUNK)
    scores = rows * (cfg.n_heads // plan.split) * queries * cfg.seq_len * 4
    return {
        "prefill_attention_scores_bytes": scores,
        "model": cfg.name,
        "mesh": mesh.name,
        "method": method,
        "batch": cfg.batch,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "microbatches": m,
        "plan": plan.to_dict(),
        "predicted_per_device": {**predicted, "total": predicted_args},
        "hbm_bytes": hbm,
        "programs": programs,
    }


def cost_check(cfg: ModelConfig, batch: int) -> dict:
    """The perf model's FLOPs and bytes for one decode step on one device, beside XLA's own
    cost analysis of that step (compiled from abstract arrays, layers unrolled: XLA counts a
    loop body once). In float32: XLA's CPU cost analysis also counts the ops that emulate
    bf16 arithmetic (3.4x the FLOPs for dense16-tiny in bf16), which a GPU does not run."""
    cfg = cfg.replace(dtype="float32")
    import jax
    import jax.numpy as jnp

    from jaxpart.layers import forward, jnp_dtype
    from jaxpart.model import empty_cache, init_params
    from jaxpart.perfmodel import decode_step_flops

    params = jax.eval_shape(lambda: init_params(cfg, 0))
    k, v = jax.eval_shape(lambda: empty_cache(cfg, batch, jnp_dtype(cfg.dtype)))
    token = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    step = jax.jit(lambda p, t, k, v: forward(p, t, k, v, 0, unroll=True))
    cost = step.lower(params, token, k, v).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    mem = layer_memory(cfg)
    # The least a step must move: every weight and the whole cache read once (our attention
    # reads all seq_len positions, masked), the embedding row and the LM head.
    kv = cfg.n_layers * 2 * batch * cfg.seq_len * cfg.n_heads * cfg.head_dim * cfg.dtype_bytes
    minimum = cfg.n_layers * mem.weight_bytes + kv + cfg.d_model * cfg.vocab * cfg.dtype_bytes
    return {
        "xla_flops": float(cost["flops"]),
        "model_flops": decode_step_flops(cfg, batch, cfg.seq_len),
        "xla_bytes_accessed": float(cost["bytes accessed"]),
        "model_bytes": minimum,
    }
