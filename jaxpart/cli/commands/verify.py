"""`jaxpart verify`: the full-size sharded programs compiled from abstract arrays on simulated
CPU devices (nothing is allocated), beside the memory model and XLA's cost analysis."""

from __future__ import annotations

import json
from dataclasses import replace

from rich.console import Console

from jaxpart.cli.args import model_and_shape, plan_choice
from jaxpart.cli.outputs import write_text_atomically
from jaxpart.config import format_bytes, load_mesh


def run(args, console: Console) -> int:
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    choice = plan_choice(args, mesh)
    from jaxpart.planning.memory import check_pod

    check_pod(model, mesh, shape)  # before jax starts: the same refusal as plan and simulate
    from jaxpart.measure.verify import cost_check, verify
    from jaxpart.runtime.sharding import ensure_cpu_devices

    # Always simulated CPU devices, as many as the mesh has: nothing is allocated.
    ensure_cpu_devices(mesh.n_devices)
    with console.status("compiling") as status:
        result = verify(
            model,
            mesh,
            args.method,
            choice,
            shape,
            progress=lambda p: status.update(f"lowering and compiling {p} (abstract arrays)"),
        )
        status.update("XLA's cost analysis of one decode step")
        result = replace(result, cost_check=cost_check(model, shape.batch))
    pred = result.on_mesh
    head = f"{args.method} plan of {model.name} (batch {shape.batch}) on {mesh.name}"
    if result.cuda:
        console.print(f"{head}, lowered for CUDA with the kernels a GPU run uses (auto):")
        for name, low in result.cuda.items():
            console.print(
                f"  {name}: {low.pallas_kernels} Pallas (Triton) kernel calls; largest buffer "
                f"it creates {format_bytes(low.largest_intermediate_bytes)} "
                f"({low.largest_intermediate})"
            )
    console.print(
        f"{head}, compiled for {mesh.n_devices} simulated CPU devices from abstract arrays (XLA "
        "kernel paths: a CUDA program needs a GPU to compile); per device:"
    )
    hbm = format_bytes(result.hbm_bytes)
    for name, p in result.programs.items():
        console.print(
            f"  XLA {name}: arguments {format_bytes(p.argument_bytes)}, temporaries "
            f"{format_bytes(p.temp_bytes)}, outputs {format_bytes(p.output_bytes)} "
            f"(aliased {format_bytes(p.alias_bytes)}); peak {format_bytes(p.peak_bytes)}"
        )
    console.print(
        f"  memory model for this CPU compile: {_memory_parts(result.cpu_compile_parts())} = "
        f"{format_bytes(result.cpu_compile_bytes)}, {result.predicted_over_xla_peak:.3f}x XLA's "
        f"peak of {format_bytes(result.xla_peak_bytes)} (weights, embedding, head and KV cache: "
        f"{result.predicted_state_over_xla:.3f}x XLA's decode arguments and outputs)"
    )
    console.print(
        f"  memory model on {mesh.name} ({'flash' if mesh.platform == 'gpu' else 'XLA'} "
        f"attention, buffers included): {_memory_parts(pred.parts())} = "
        f"{format_bytes(pred.total)}: {'fits' if result.fits_hbm else 'does NOT fit'} {hbm} of "
        "HBM"
    )
    cost = result.cost_check
    console.print(
        f"  one decode step on one device (batch {shape.batch}, float32, attending over "
        f"{cost.attended_positions} positions: XLA counts the attention's loop over KV blocks "
        f"once), XLA's cost analysis vs the perf model: {cost.xla_flops / 1e9:.2f} vs "
        f"{cost.model_flops / 1e9:.2f} GFLOP "
        f"({cost.xla_flops / cost.model_flops - 1:+.1%}); bytes accessed "
        f"{format_bytes(cost.xla_bytes_accessed)} vs the model's minimum "
        f"{format_bytes(cost.model_bytes)} (XLA counts every operand of every op: "
        "intermediates and the cache update, which the model does not count)"
    )
    if not result.fits_hbm:
        console.print(
            "  more --microbatches shrink a prefill's activations (a microbatch's rows x prompt)"
        )
    if args.json:
        write_text_atomically(args.json, json.dumps(result.to_dict(), indent=2))
        console.print(f"written to {args.json}")
    return 0


def _memory_parts(parts: dict[str, int]) -> str:
    names = {"kv_cache": "KV cache", "embedding_and_head": "embedding and head"}
    names |= {"cpu_widening": "XLA CPU's f32 copies"}
    return " + ".join(f"{names.get(k, k)} {format_bytes(v)}" for k, v in parts.items() if v)
