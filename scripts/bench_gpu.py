"""One-call GPU benchmark for jaxpart: what the performance model needs, measured on one GPU in one
run, into one JSON file (which `jaxpart simulate --calibration` reads).

    PYTHONPATH=. python scripts/bench_gpu.py                 # on a GPU (jax, numpy, stdlib only)
    python scripts/bench_gpu.py --cpu --small                # CPU smoke run: interpret mode, tiny

After checking each kernel against its reference on fresh random inputs, it measures:
  ceilings   a device copy (bytes read + written) and a bf16 matmul: the measured roofs
  launch     the fixed cost of one kernel launch (a tiny Pallas kernel, many in one program)
  mlp_fp8    the same with FP8 weights (per channel, activations per token): the Pallas
             kernels on e4m3 tiles against XLA's FP8 GEMMs (llama3.1-70b's shapes on a GPU)
  mlp        the MLP kernels (Pallas) against XLA at the decode shapes of every shipped model in
             both placements (rows, d_model, d_ff per device from the default plans on h100x16):
             time, bytes/s, fraction of the HBM roof. Weight sets rotate so that together they
             exceed twice the L2: no run is flattered by the cache.
  attention  decode attention, Pallas (paged, JAX's own) against XLA, at the seed's context
  l2         one resident stage's MLP re-read many times while a KV-sized stream runs beside
             it, with and without the eviction hints: effective weight bandwidth against HBM's
  stage      one decode tick of each placement's stage (all its layers, attention at the
             seed's context) with the kernels auto picks and with XLA
Timing: warm-up first, every run synchronised (block_until_ready), many runs, median and spread;
small ops run `inner` times inside one jitted loop so launch overhead does not swamp them.
The JSON goes to $OUT when set, else results/. It names the device, jax version and every
figure. Targets (printed, not asserted): Pallas MLP >= 1.0x XLA and >= 80% of the HBM roof;
decode attention >= 80% of the roof; the resident stage with hints >= 1.5x the HBM rate.
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
from jax.experimental import pallas as pl  # noqa: E402

from jaxpart.config import default_run, load_mesh, load_model, shipped  # noqa: E402
from jaxpart.config.quant import DEFAULT_FP8  # noqa: E402
from jaxpart.model.kernels.attention import decode_attention, decode_attention_reference  # noqa: E402
from jaxpart.model.kernels.backend import KernelChoice  # noqa: E402
from jaxpart.model.kernels.mlp import _mlp_pallas, choose_block_sizes, mlp, mlp_reference  # noqa: E402
from jaxpart.model.layers import run_layers  # noqa: E402
from jaxpart.model.quant import quantize_leaf  # noqa: E402
from jaxpart.planning.memory import cache_positions  # noqa: E402
from jaxpart.planning.placement import decode_shapes  # noqa: E402

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


def launch_cost(inner, repeats, interpret):
    """Seconds per launch of a kernel that does almost nothing (one 16 x 16 tile)."""

    def tiny(x_ref, o_ref):
        o_ref[...] = x_ref[...] + 1.0

    call = pl.pallas_call(
        tiny, out_shape=jax.ShapeDtypeStruct((16, 16), jnp.float32), interpret=interpret
    )
    fn = jax.jit(lambda x: jax.lax.fori_loop(0, inner, lambda _, x: call(x), x))
    t = timed(fn, [(jnp.zeros((16, 16), jnp.float32),)], repeats)
    return {**t, "launches": inner, "per_launch_s": t["median_s"] / inner}


def mlp_step(kernel, hints=True):
    """y = mlp(x) through ``kernel``; ``hints=False``: the Pallas kernels without eviction hints."""

    def step(x, w1, w2, w3=None):
        if kernel.mlp == "pallas" and not hints:
            bs = choose_block_sizes(
                x.shape[0],
                x.shape[1],
                w1.shape[1],
                x.dtype,
                kernel.sram_bytes,
                sm_count=kernel.sm_count,
                gated=w3 is not None,
            )
            index = jnp.zeros((1,), jnp.int32)
            return _mlp_pallas(
                x,
                w1[None],
                w2[None],
                index,
                None if w3 is None else w3[None],
                block_sizes=bs,
                interpret=bool(kernel.interpret),
                out_dtype=jnp.dtype(x.dtype),
                hints=False,
            )
        return mlp(x, w1, w2, w3=w3, kernel=kernel)

    return step


def mlp_loop(kernel, inner, hints=True):
    """`inner` rounds over every weight set, each output feeding the next input."""
    step = mlp_step(kernel, hints)

    def run(x, w1s, w2s, w3s=None):
        def body(_, x):
            for i, (w1, w2) in enumerate(zip(w1s, w2s, strict=True)):
                w3 = None if w3s is None else w3s[i]
                x = x + (1e-3 * step(x, w1, w2, w3)).astype(x.dtype)
            return x

        return jax.lax.fori_loop(0, inner, body, x)

    return jax.jit(run)


def bench_mlp(shapes, l2_bytes, hbm_bw, kernels, repeats, inner):
    rows = []
    for shape in shapes:
        m, d, f = shape["rows"], shape["d_model"], shape["d_ff"]
        gated = shape["mlp"] == "swiglu"
        set_bytes = (3 if gated else 2) * d * f * 2
        n_sets = max(1, min(8, math.ceil(2 * l2_bytes / set_bytes)))
        w1s = tuple(fresh((d, f), d**-0.5) for _ in range(n_sets))
        w2s = tuple(fresh((f, d), f**-0.5) for _ in range(n_sets))
        w3s = tuple(fresh((d, f), d**-0.5) for _ in range(n_sets)) if gated else None
        xs = [fresh((m, d)) for _ in range(2)]
        bs = choose_block_sizes(
            m,
            d,
            f,
            DTYPE,
            kernels["pallas"].sram_bytes,
            sm_count=kernels["pallas"].sm_count,
            gated=gated,
        )
        w3 = w3s[0] if gated else None
        got = mlp(xs[0], w1s[0], w2s[0], w3=w3, kernel=kernels["pallas"])
        f32 = [a.astype(jnp.float32) for a in (xs[0], w1s[0], w2s[0])]
        ref = mlp_reference(*f32, w3=None if w3 is None else w3.astype(jnp.float32))
        err = rel_error(got, ref)
        row = {**shape, "weight_sets": n_sets, "block_sizes": bs.__dict__, "rel_error_vs_f32": err}
        if not err < 1e-2:
            row["error"] = "Pallas result wrong; not timed"
            rows.append(row)
            continue
        moved = set_bytes + 2 * m * d * 2  # weights once, x in, y out
        loops = {name: mlp_loop(kernels[name], inner) for name in ("pallas", "xla")}
        args = [(x, w1s, w2s, w3s) for x in xs]
        rows.append(_time_both(row, loops, args, moved, inner * n_sets, hbm_bw, repeats))
    return rows


def _time_both(row, loops, args, moved, calls, hbm_bw, repeats):
    """``row`` with the Pallas and XLA ``loops`` timed on ``args`` (each run ``calls`` MLP
    calls moving ``moved`` bytes each) and Pallas's speed over XLA's."""
    for name, fn in loops.items():
        t = timed(fn, args, repeats)
        per_call = t["median_s"] / calls
        row[name] = {
            **t,
            "per_call_s": per_call,
            "bytes_per_s": moved / per_call,
            "hbm_roof_fraction": moved / per_call / hbm_bw,
        }
    row["pallas_over_xla_speed"] = row["xla"]["per_call_s"] / row["pallas"]["per_call_s"]
    return row


def _fp8(w):
    """A [K, N] matrix per output channel in e4m3, and its scales, as --quantize fp8 makes them."""
    q, scale = quantize_leaf(np.asarray(w, np.float32), 1, (w.shape[1],))
    return jnp.asarray(q), jnp.asarray(scale)


def bench_mlp_fp8(shapes, l2_bytes, hbm_bw, kernels, repeats, inner):
    """The MLP with FP8 weights (per channel, activations per token): the Pallas kernels on
    e4m3 tiles against XLA's FP8 GEMMs, at the same decode shapes; bytes moved count the
    weights at one byte and their f32 scales."""
    rows = []
    for shape in shapes:
        m, d, f = shape["rows"], shape["d_model"], shape["d_ff"]
        gated = shape["mlp"] == "swiglu"
        set_bytes = (3 if gated else 2) * d * f + (2 * f + d) * 4
        n_sets = max(1, min(8, math.ceil(2 * l2_bytes / set_bytes)))
        sets = []
        for _ in range(n_sets):
            w1, s1 = _fp8(fresh((d, f), d**-0.5))
            w2, s2 = _fp8(fresh((f, d), f**-0.5))
            one = {"w1": w1, "w2": w2, "w1_scale": s1, "w2_scale": s2}
            if gated:
                one["w3"], one["w3_scale"] = _fp8(fresh((d, f), d**-0.5))
            sets.append(one)
        xs = [fresh((m, d)) for _ in range(2)]

        def step(kernel):
            def run(x, weight_sets):
                def body(_, x):
                    for w in weight_sets:
                        scales = {k: v for k, v in w.items() if "scale" in k}
                        y = mlp(
                            x,
                            w["w1"],
                            w["w2"],
                            w3=w.get("w3"),
                            kernel=kernel,
                            quant=DEFAULT_FP8,
                            scales=scales,
                        )
                        x = x + (1e-3 * y).astype(x.dtype)
                    return x

                return jax.lax.fori_loop(0, inner, body, x)

            return jax.jit(run)

        w = sets[0]
        scales = {k: v for k, v in w.items() if "scale" in k}
        args = dict(w3=w.get("w3"), quant=DEFAULT_FP8, scales=scales)
        got = mlp(xs[0], w["w1"], w["w2"], kernel=kernels["pallas"], **args)
        ref = mlp(xs[0], w["w1"], w["w2"], kernel=kernels["xla"], **args)
        err = rel_error(got, ref)
        row = {**shape, "weight_sets": n_sets, "rel_error_vs_xla_fp8": err}
        if not err < 1e-2:
            row["error"] = "Pallas FP8 result wrong; not timed"
            rows.append(row)
            continue
        moved = set_bytes + 2 * m * d * 2
        loops = {name: step(kernels[name]) for name in ("pallas", "xla")}
        args = [(x, sets) for x in xs]
        rows.append(_time_both(row, loops, args, moved, inner * n_sets, hbm_bw, repeats))
    return rows


def bench_attention(rows, heads, head_dim, context, hbm_bw, kernels, repeats, inner):
    """Decode attention of `rows` sequences at position `context` - 1 over a one-layer cache."""
    positions = cache_positions(context)
    k, v = (
        fresh((heads, 1, rows, positions, head_dim)),
        fresh((heads, 1, rows, positions, head_dim)),
    )
    q = fresh((rows, heads, head_dim))
    new = fresh((2, heads, rows, head_dim))
    pos = context - 1
    ref, _, _ = decode_attention_reference(q, new[0], new[1], k, v, 0, 0, pos)
    moved = 2 * rows * context * heads * head_dim * 2
    out = {
        "rows": rows,
        "heads": heads,
        "head_dim": head_dim,
        "context": context,
        "kv_bytes_read": moved,
    }
    for name in ("pallas", "xla"):
        kernel = kernels[name]
        got, _, _ = decode_attention(q, new[0], new[1], k, v, 0, 0, pos, kernel=kernel)
        err = rel_error(got, ref)

        def loop(q, k, v, kernel=kernel):
            def body(_, carry):
                q, k, v = carry
                o, k, v = decode_attention(q, new[0], new[1], k, v, 0, 0, pos, kernel=kernel)
                return (q + (1e-3 * o).astype(q.dtype), k, v)

            return jax.lax.fori_loop(0, inner, body, (q, k, v))[0]

        t = timed(jax.jit(loop), [(q, k, v)], repeats)
        per_call = t["median_s"] / inner
        out[name] = {
            **t,
            "rel_error": err,
            "per_call_s": per_call,
            "bytes_per_s": moved / per_call,
            "hbm_roof_fraction": moved / per_call / hbm_bw,
        }
    out["pallas_over_xla_speed"] = out["xla"]["per_call_s"] / out["pallas"]["per_call_s"]
    return out


def bench_l2(d, f, m, stream_bytes, hbm_bw, kernel, repeats, inner):
    """One weight set (the resident stage) re-read `inner` times, a KV-sized stream read between
    each pass; with and without the eviction hints. Effective weight bandwidth = weight bytes per
    pass / (time per pass - the stream's own time per pass)."""
    w1, w2 = fresh((d, f), d**-0.5), fresh((f, d), f**-0.5)
    stream = fresh((stream_bytes // 2,))
    weight_bytes = 2 * d * f * 2

    def with_stream(hints):
        step = mlp_step(kernel, hints)

        def run(x, stream):
            def body(i, carry):
                x, acc = carry
                x = x + (1e-3 * step(x, w1, w2)).astype(x.dtype)
                return x, acc + stream.astype(jnp.float32).sum() * 1e-9

            return jax.lax.fori_loop(0, inner, body, (x, jnp.float32(0)))

        return jax.jit(run)

    stream_only = jax.jit(
        lambda s: jax.lax.fori_loop(
            0, inner, lambda i, acc: acc + s.astype(jnp.float32).sum() * 1e-9, jnp.float32(0)
        )
    )
    ts = timed(stream_only, [(stream,)], repeats)
    out = {
        "d_model": d,
        "d_ff": f,
        "rows": m,
        "weight_bytes": weight_bytes,
        "stream_bytes": stream_bytes,
        "stream_alone": ts,
    }
    for name, hints in (("with_hints", True), ("without_hints", False)):
        t = timed(with_stream(hints), [(fresh((m, d)), stream)], repeats)
        mlp_s = max(t["median_s"] - ts["median_s"], 1e-12) / inner
        out[name] = {
            **t,
            "effective_bytes_per_s": weight_bytes / mlp_s,
            "over_hbm_roof": weight_bytes / mlp_s / hbm_bw,
        }
    out["fits_l2"] = {"effective_bytes_per_s": out["with_hints"]["effective_bytes_per_s"]}
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


def bench_stage(shapes, context, kernels, repeats):
    """One decode tick of a placement's stage: all its layers, one microbatch, at `context`."""
    rows = []
    for s in shapes:
        n, b = s["layers_per_stage"], s["rows"]
        p = stage_params(n, s["d_model"], s["heads"], s["head_dim"], s["d_ff"])
        cache = (s["heads"], n, b, cache_positions(context), s["head_dim"])
        k, v = fresh(cache), fresh(cache)
        for name, kernel in kernels.items():
            fn = jax.jit(
                lambda x, p, k, v, kernel=kernel: run_layers(p, x, k, v, context - 1, kernel=kernel)
            )
            t = timed(fn, [(fresh((b, 1, s["d_model"])), p, k, v) for _ in range(2)], repeats)
            rows.append(
                {
                    **s,
                    "kernels": name,
                    "context": context,
                    "weight_bytes": sum(a.size * 2 for a in p.values()),
                    "kv_bytes_read": 2 * n * b * context * s["heads"] * s["head_dim"] * 2,
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
    small, interpret = ARGS.small, ARGS.cpu
    repeats = ARGS.repeats or (3 if small else 30)
    mesh = load_mesh("cpu16" if ARGS.cpu else "h100x16")
    hbm_bw = mesh.tiers["hbm"].bandwidth_bytes_per_s
    l2_bytes = mesh.tiers["l2"].capacity_bytes
    smem = load_mesh("h100x16").tiers["smem"]
    kernels = {
        name: KernelChoice(
            mlp=name,
            attention=name,
            sram_bytes=smem.capacity_bytes,
            sm_count=smem.sm_count,
            strict=True,
            interpret=interpret or None,
        )
        for name in ("pallas", "xla")
    }
    result = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "mesh_file": f"meshes/{mesh.name}.toml",
        "hbm_roof_bytes_per_s": hbm_bw,
        "small": small,
        "repeats": repeats,
    }
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    result["ceilings"] = ceilings(small, repeats)
    result["launch"] = launch_cost(4 if small else 1000, repeats, interpret)
    models = [(load_model(str(p)), default_run(str(p))) for p in shipped("models")]
    shapes = decode_shapes(models, load_mesh("h100x16"))
    if small:  # the CPU model only: one layer a stage, and two row counts for the MLP
        shapes = [dict(s, layers_per_stage=1) for s in shapes if s["model"] == "dense16-tiny"]
        mlp_shapes = [dict(shapes[0], rows=r) for r in (8, 16)]
    else:  # every model's MLP; stage ticks for the seed's two models
        mlp_shapes = [s for s in shapes if s["model"] not in ("dense16-tiny", "gqa-tiny")]
        shapes = [s for s in shapes if s["model"] in ("dense16", "dense16-l2")]
    result["mlp"] = bench_mlp(mlp_shapes, l2_bytes, hbm_bw, kernels, repeats, 2 if small else 20)
    fp8_shapes = mlp_shapes if small else [s for s in mlp_shapes if s["model"] == "llama3.1-70b"]
    result["mlp_fp8"] = bench_mlp_fp8(
        fp8_shapes, l2_bytes, hbm_bw, kernels, repeats, 2 if small else 20
    )
    seed = load_model("dense16")
    context = 48 if small else seed.seq_len
    heads, head_dim = (8, 16) if small else (seed.n_heads, seed.head_dim)
    result["attention"] = bench_attention(
        8, heads, head_dim, context, hbm_bw, kernels, repeats, 2 if small else 10
    )
    # ~25 MB of bf16 weights (fits H100's 50 MB L2, under the ~33 MB it serves at full speed)
    # beside a 1 GiB stream, about one decode step's KV for a dense16-l2 stage.
    l2 = (128, 256, 16, 1 << 20) if small else (1024, 6144, 16, 1 << 30)
    result["l2"] = bench_l2(*l2, hbm_bw, kernels["pallas"], repeats, 2 if small else 20)
    result["stage"] = bench_stage(shapes, context, kernels, repeats)

    out_dir = Path(ARGS.out or os.environ.get("OUT") or ROOT / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench_gpu.json"
    path.write_text(json.dumps(result, indent=2))
    report(result, path)


def report(result, path):
    on = result["device"]
    c = result["ceilings"]
    print(
        f"measured on {on}: copy {c['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 matmul "
        f"{c['matmul_flops_per_s'] / 1e12:.1f} TF/s, kernel launch "
        f"{result['launch']['per_launch_s'] * 1e6:.1f} us"
    )
    print(
        f"{'model':>12} {'method':>9} {'m':>3} {'d x F':>11} {'pallas us':>9} {'xla us':>7} "
        f"{'P/X':>5} {'P roof':>6}  target: P/X >= 1.0, roof >= 80%"
    )
    for kind, rows in (("", result["mlp"]), ("FP8 ", result.get("mlp_fp8", []))):
        for r in rows:
            head = f"{r['model']:>12} {r['method']:>9} {r['rows']:>3}"
            if "error" in r:
                print(f"{head} {kind}: {r['error']}")
                continue
            print(
                f"{head} {kind}{r['d_model']:>5}x{r['d_ff']:<5} "
                f"{r['pallas']['per_call_s'] * 1e6:>9.1f} {r['xla']['per_call_s'] * 1e6:>7.1f} "
                f"{r['pallas_over_xla_speed']:>5.2f} {r['pallas']['hbm_roof_fraction']:>6.0%}"
            )
    a = result["attention"]
    print(
        f"decode attention at context {a['context']} ({a['rows']} rows): Pallas "
        f"{a['pallas']['per_call_s'] * 1e6:.0f} us ({a['pallas']['hbm_roof_fraction']:.0%} of "
        f"the HBM roof; target 80%), XLA {a['xla']['per_call_s'] * 1e6:.0f} us"
    )
    l2 = result["l2"]
    print(
        f"resident stage while KV streams: with hints "
        f"{l2['with_hints']['over_hbm_roof']:.2f}x the HBM roof, without "
        f"{l2['without_hints']['over_hbm_roof']:.2f}x (target 1.5x with hints)"
    )
    for r in result["stage"]:
        print(
            f"stage tick {r['model']:>10} {r['method']:>9} ({r['kernels']:>6}): "
            f"{r['median_s'] * 1e6:.0f} us"
        )
    print(f"measured on {on}; written to {path}")


if __name__ == "__main__":
    main()
