"""One-call GPU benchmark for jaxpart: everything measured on one GPU in one run, one JSON file.

    PYTHONPATH=. python scripts/bench_gpu.py                 # on a GPU (jax, numpy, stdlib only)
    python scripts/bench_gpu.py --cpu --small                # CPU smoke run: interpret mode, tiny

It measures, after checking correctness against the reference on fresh random inputs:
  ceilings  a device copy (bytes read + written) and a bf16 matmul: the measured roofs
  (a) mlp   fused_mlp Pallas vs XLA at decode shapes (m = 8, 16, 64, 128; d_model x d_ff =
            4096 x 16384 and 1024 x 4096): time, bytes/s, fraction of the HBM roof. Weight sets
            rotate so that together they exceed twice the L2: no run is flattered by the cache.
  (b) l2    repeated passes of one MLP block over the same weights, ~25 MB (fits L2) vs
            ~400 MB, as effective bandwidth: what keeping a partition resident buys.
  (c) stage one decode step of a layer-wise stage (one full-width layer) vs a TP8 shard of a
            PP=2 stage (8 layers at 1/8 width; its all-reduces are not timed: one GPU) at
            dense16 and dense16-l2 dims.
Timing: warm-up first, every run synchronised (block_until_ready), many runs, median and spread;
small ops run `inner` times inside one jitted loop so launch overhead does not swamp them.
The JSON goes to $OUT when set, else results/. It names the device, jax version and every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on CPU (Pallas in interpret mode)")
    p.add_argument("--small", action="store_true", help="tiny shapes: a smoke test")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else results/)")
    return p.parse_args()


ARGS = parse_args()
if ARGS.cpu:
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxpart.config import load_mesh  # noqa: E402
from jaxpart.kernels.mlp import (  # noqa: E402
    KernelChoice,
    choose_block_sizes,
    fused_mlp,
    mlp_reference,
)
from jaxpart.layers import run_layers  # noqa: E402

DTYPE = jnp.bfloat16
KEY = [jax.random.key(int(time.time()))]  # fresh inputs on every run of the script


def fresh(shape, scale=1.0, dtype=DTYPE):
    KEY[0], k = jax.random.split(KEY[0])
    return (jax.random.normal(k, shape, jnp.float32) * scale).astype(dtype)


def timed(fn, arg_sets, repeats):
    """Median and spread (p10, p90) in seconds of fn(*args), rotating through arg_sets."""
    for args in arg_sets:  # warm-up: compile and load
        jax.block_until_ready(fn(*args))
    times = []
    for r in range(repeats):
        args = arg_sets[r % len(arg_sets)]
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"median_s": statistics.median(times), "p10_s": q(0.1), "p90_s": q(0.9)}


def rel_error(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if not np.isfinite(out).all():
        return float("inf")
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def ceilings(small, repeats):
    n = (1 << 20) if small else (1 << 28)  # bf16 elements: 2 MiB / 512 MiB
    x = [fresh((n,)) for _ in range(2)]
    copy = jax.jit(lambda a: a * 1.0001)
    t = timed(copy, [(a,) for a in x], repeats)
    size = 256 if small else 8192
    a, b = fresh((size, size)), fresh((size, size))
    mm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    tm = timed(mm, [(a, b)], repeats)
    return {
        "copy_bytes": 4 * n,
        "copy_bytes_per_s": 4 * n / t["median_s"],
        "matmul_n": size,
        "matmul_flops_per_s": 2 * size**3 / tm["median_s"],
    }


def mlp_loop(backend, block_sizes, inner, interpret):
    """`inner` rounds over every weight set, each output feeding the next input."""

    def run(x, w1s, w2s):
        def body(_, x):
            for w1, w2 in zip(w1s, w2s, strict=True):
                y = fused_mlp(
                    x,
                    w1,
                    w2,
                    backend=backend,
                    block_sizes=block_sizes,
                    interpret=interpret,
                    strict=True,
                )
                x = x + (1e-3 * y).astype(x.dtype)
            return x

        return jax.lax.fori_loop(0, inner, body, x)

    return jax.jit(run)


def bench_mlp(shapes, ms, l2_bytes, hbm_bw, sram, interpret, repeats, inner):
    rows = []
    for d, f in shapes:
        set_bytes = 2 * d * f * 2
        n_sets = max(1, min(8, math.ceil(2 * l2_bytes / set_bytes)))
        w1s = tuple(fresh((d, f), d**-0.5) for _ in range(n_sets))
        w2s = tuple(fresh((f, d), f**-0.5) for _ in range(n_sets))
        for m in ms:
            xs = [fresh((m, d)) for _ in range(2)]
            bs = choose_block_sizes(m, d, f, DTYPE, sram)
            got = fused_mlp(
                xs[0],
                w1s[0],
                w2s[0],
                backend="pallas",
                block_sizes=bs,
                interpret=interpret,
                strict=True,
            )
            ref = mlp_reference(
                xs[0].astype(jnp.float32), w1s[0].astype(jnp.float32), w2s[0].astype(jnp.float32)
            )
            err = rel_error(got, ref)
            row = {
                "m": m,
                "d_model": d,
                "d_ff": f,
                "weight_sets": n_sets,
                "block_sizes": bs.__dict__,
                "rel_error_vs_f32": err,
            }
            if not err < 1e-2:
                row["error"] = "Pallas result wrong; not timed"
                rows.append(row)
                continue
            moved = set_bytes + 2 * m * d * 2  # weights once, x in, y out
            for name, backend in (("pallas", "pallas"), ("xla", "xla")):
                fn = mlp_loop(backend, bs if backend == "pallas" else None, inner, interpret)
                t = timed(fn, [(x, w1s, w2s) for x in xs], repeats)
                per_call = t["median_s"] / (inner * n_sets)
                row[name] = {
                    **t,
                    "per_call_s": per_call,
                    "bytes_per_s": moved / per_call,
                    "hbm_roof_fraction": moved / per_call / hbm_bw,
                }
            row["pallas_over_xla_speed"] = row["xla"]["per_call_s"] / row["pallas"]["per_call_s"]
            rows.append(row)
    return rows


def bench_l2(sizes, m, repeats, inner):
    """The same MLP block run `inner` times over ONE weight set: resident in L2 or not."""
    out = {}
    for name, (d, f) in sizes.items():
        w1, w2 = fresh((d, f), d**-0.5), fresh((f, d), f**-0.5)
        fn = mlp_loop("xla", None, inner, interpret=False)
        t = timed(fn, [(fresh((m, d)), (w1,), (w2,)) for _ in range(2)], repeats)
        weight_bytes = 2 * d * f * 2
        out[name] = {
            **t,
            "d_model": d,
            "d_ff": f,
            "weight_bytes": weight_bytes,
            "effective_bytes_per_s": weight_bytes * inner / t["median_s"],
        }
    out["ratio"] = (
        out["fits_l2"]["effective_bytes_per_s"] / out["exceeds_l2"]["effective_bytes_per_s"]
    )
    return out


def stage_params(n_layers, d, heads, head_dim, d_ff):
    return {
        "ln1": fresh((n_layers, d)) + 1,
        "ln2": fresh((n_layers, d)) + 1,
        "wq": fresh((n_layers, d, heads, head_dim), d**-0.5),
        "wk": fresh((n_layers, d, heads, head_dim), d**-0.5),
        "wv": fresh((n_layers, d, heads, head_dim), d**-0.5),
        "wo": fresh((n_layers, heads, head_dim, d), (heads * head_dim) ** -0.5),
        "w1": fresh((n_layers, d, d_ff), d**-0.5),
        "w2": fresh((n_layers, d_ff, d), d_ff**-0.5),
    }


def bench_stage(models, batch, context, repeats, interpret):
    rows = []
    for name, (d, heads, head_dim, d_ff) in models.items():
        for label, n_layers, split in (("layerwise", 1, 1), ("tp8_shard", 8, 8)):
            p = stage_params(n_layers, d, heads // split, head_dim, d_ff // split)
            cache = (n_layers, batch, context, heads // split, head_dim)
            k, v = fresh(cache), fresh(cache)
            for backend in ("xla", "pallas"):
                kernel = KernelChoice(backend, interpret=interpret or None)
                fn = jax.jit(
                    lambda x, p, k, v, kernel=kernel: run_layers(
                        p, x, k, v, context - 1, kernel=kernel
                    )[0]
                )
                xs = [fresh((batch, 1, d)) for _ in range(2)]
                t = timed(fn, [(x, p, k, v) for x in xs], repeats)
                weight_bytes = sum(a.size * 2 for a in p.values())
                rows.append(
                    {
                        "model": name,
                        "stage": label,
                        "layers": n_layers,
                        "split": split,
                        "mlp_kernel": backend,
                        "batch": batch,
                        "context": context,
                        "weight_bytes": weight_bytes,
                        "kv_bytes": 2 * k.size * 2,
                        **t,
                    }
                )
    return rows


def main():
    device = jax.devices()[0]
    if not ARGS.cpu and device.platform != "gpu":
        print(
            f"bench_gpu: error: no GPU (jax sees {device.platform}); use --cpu --small",
            file=sys.stderr,
        )
        sys.exit(2)
    small = ARGS.small
    repeats = ARGS.repeats or (3 if small else 50)
    interpret = ARGS.cpu
    mesh = load_mesh("cpu16" if ARGS.cpu else "h100x16")
    hbm_bw = mesh.tiers["hbm"].bandwidth_bytes_per_s
    l2_bytes = mesh.tiers["l2"].capacity_bytes
    sram = mesh.tiers["smem"].capacity_bytes
    result = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "mesh_file": f"meshes/{mesh.name}.toml",
        "hbm_roof_bytes_per_s": hbm_bw,
        "small": small,
        "repeats": repeats,
    }
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    result["ceilings"] = ceilings(small, repeats)
    shapes = [(128, 512)] if small else [(4096, 16384), (1024, 4096)]
    ms = [8, 16] if small else [8, 16, 64, 128]
    result["mlp"] = bench_mlp(
        shapes, ms, l2_bytes, hbm_bw, sram, interpret, repeats, inner=2 if small else 20
    )
    # ~25 MB (fits the 50 MB L2) vs ~400 MB of bf16 weights; tiny sizes for the smoke run.
    l2_sizes = (
        {"fits_l2": (128, 256), "exceeds_l2": (512, 2048)}
        if small
        else {"fits_l2": (1024, 6144), "exceeds_l2": (4096, 24576)}
    )
    result["l2"] = bench_l2(l2_sizes, 16, repeats, inner=2 if small else 50)
    models = (
        {"tiny": (128, 8, 16, 512)}
        if small
        else {"dense16": (4096, 32, 128, 16384), "dense16-l2": (1024, 8, 128, 4096)}
    )
    result["stage"] = bench_stage(
        models, 16 if not small else 2, 2048 if not small else 32, repeats, interpret
    )

    out_dir = Path(ARGS.out or os.environ.get("OUT") or ROOT / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench_gpu.json"
    path.write_text(json.dumps(result, indent=2))

    c = result["ceilings"]
    print(
        f"measured on {device.device_kind}: copy {c['copy_bytes_per_s'] / 1e9:.0f} GB/s, "
        f"bf16 matmul {c['matmul_flops_per_s'] / 1e12:.1f} TF/s"
    )
    print(f"{'m':>4} {'d x F':>12} {'pallas us':>10} {'xla us':>8} {'P/X':>5} {'P roof':>7}")
    for r in result["mlp"]:
        if "error" in r:
            print(f"{r['m']:>4} {r['d_model']}x{r['d_ff']}: {r['error']}")
            continue
        print(
            f"{r['m']:>4} {r['d_model']:>5}x{r['d_ff']:<6} "
            f"{r['pallas']['per_call_s'] * 1e6:>10.1f} {r['xla']['per_call_s'] * 1e6:>8.1f} "
            f"{r['pallas_over_xla_speed']:>5.2f} {r['pallas']['hbm_roof_fraction']:>6.0%}"
        )
    l2 = result["l2"]
    print(
        f"L2: resident {l2['fits_l2']['effective_bytes_per_s'] / 1e9:.0f} GB/s vs "
        f"{l2['exceeds_l2']['effective_bytes_per_s'] / 1e9:.0f} GB/s: {l2['ratio']:.2f}x"
    )
    for r in result["stage"]:
        print(
            f"stage {r['model']:>10} {r['stage']:>9} ({r['mlp_kernel']:>6}): "
            f"{r['median_s'] * 1e6:.0f} us"
        )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
