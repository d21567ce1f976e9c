"""Measuring generation: TTFT, TPS, TPOT and amortised ms/token, medians and spread over repeats
that interleave the methods, plus the decode-step breakdown of a pipeline (ticks, collectives,
what one collective costs here).

Definitions (DESIGN.md, "Measuring"):
- TTFT: prefill, until the first tokens are on the host.
- TPS: tokens generated in the decode phase, over the whole batch, per second.
- TPOT: mean time between two consecutive tokens of one sequence (decode time / decode steps).
- ms/token amortised: 1000 / TPS, which is what the seed's "TPOT" column is.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxpart.runtime.sharding import put_global


@dataclass(frozen=True)
class Measurement:
    name: str
    devices: int
    tps: float  # medians over the repeats
    tpot_ms: float
    ttft_ms: float
    ms_per_token_amortized: float
    decode_step_ms: float
    repeats: int
    tps_range: tuple[float, float]  # (min, max) over the repeats
    tpot_ms_range: tuple[float, float]
    ttft_ms_range: tuple[float, float]
    tokens_match_reference: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def with_match(self, match: bool | None) -> Measurement:
        return replace(self, tokens_match_reference=match)


def measured_on(n_devices: int) -> str:
    """Where numbers come from, in words: simulated CPU devices share the host's cores."""
    device = jax.devices()[0]
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if device.platform == "cpu":
        return f"{n_devices} simulated CPU devices ({os.cpu_count()} cores){processes}"
    return f"{n_devices} x {device.device_kind}{processes}"


_compiles = [0]


def _count_compiles(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def compile_count() -> int:
    """XLA compilations in this process so far."""
    return _compiles[0]


def rates(runs: list) -> dict[str, list[float]]:
    """Per run: TPS (the tokens the decode steps generated, padding after a stop not counted,
    per second), TPOT (per decode step run) and TTFT, in ms."""
    out = {"tps": [], "tpot_ms": [], "ttft_ms": []}
    for r in runs:
        out["ttft_ms"].append(1e3 * r.prefill_s)
        ok = r.decode_steps > 0 and r.decode_s > 0
        out["tps"].append(r.decode_tokens / r.decode_s if ok else float("nan"))
        out["tpot_ms"].append(1e3 * r.decode_s / r.decode_steps if ok else float("nan"))
    return out


def summarize(name: str, devices: int, runs: list) -> Measurement:
    """Medians and (min, max) of a method's timed runs."""
    per_run = rates(runs)

    def spread(key):
        values = per_run[key]
        return statistics.median(values), (min(values), max(values))

    tps, tps_range = spread("tps")
    tpot, tpot_range = spread("tpot_ms")
    ttft, ttft_range = spread("ttft_ms")
    return Measurement(
        name=name,
        devices=devices,
        tps=tps,
        tpot_ms=tpot,
        ttft_ms=ttft,
        ms_per_token_amortized=1e3 / tps if tps == tps else float("nan"),
        decode_step_ms=tpot,
        repeats=len(runs),
        tps_range=tps_range,
        tpot_ms_range=tpot_range,
        ttft_ms_range=ttft_range,
    )


def measure_interleaved(
    runners: dict[str, Callable[[], object]],
    repeats: int,
    on_event: Callable[[str, str], None] | None = None,
) -> tuple[dict[str, list], object, int]:
    """Warm every method up (that compiles it), then time ``repeats`` rounds in which each
    method runs once, in turn (A B C A B C ...): a slow spell of the machine hits every method
    alike instead of one. Returns (each method's timed runs, the warm-up runs, the number of
    compilations during the timed rounds, which should be 0)."""
    warm = {}
    for name, run in runners.items():
        warm[name] = run()
        if on_event:
            on_event(name, "compiled")
    before = compile_count()
    timed = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            timed[name].append(run())
            if on_event:
                on_event(name, "timed")
    return timed, warm, compile_count() - before


def collective_latency_s(mesh, axis: str, kind: str, iterations: int = 64) -> float:
    """Seconds per collective on ``axis`` of ``mesh``: a ring ppermute or a psum of 1 KiB."""
    n = mesh.shape[axis]
    ring = [(i, (i + 1) % n) for i in range(n)]

    def body(x):
        def step(_, x):
            if kind == "ppermute":
                return jax.lax.ppermute(x * 1.0001, axis, ring)
            return jax.lax.psum(x * 1.0001, axis) / n

        return jax.lax.fori_loop(0, iterations, step, x)

    spec = P(*mesh.axis_names, None)  # 256 floats on every device
    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    x = put_global(np.ones((*mesh.devices.shape, 256), np.float32), NamedSharding(mesh, spec))
    fn(x).block_until_ready()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / iterations


def decode_breakdown(executor, step_ms: float) -> dict:
    """Where a pipeline's decode step goes: ticks, bubbles, padding and collectives."""
    plan, shape = executor.plan, executor.shape
    ticks = executor.period  # ticks per decode step: every microbatch advances one token
    per_stage_layers = executor.lmax
    permutes = ticks if plan.n_stages > 1 else 0
    # Two psums per layer (after attention, after the MLP), on the ticks a stage is active.
    all_reduces = 2 * per_stage_layers * shape.microbatches if plan.split > 1 else 0
    out = {
        "stages": plan.n_stages,
        "split": plan.split,
        "microbatches": shape.microbatches,
        "ticks_per_step": ticks,
        "bubble_fraction": 1 - shape.microbatches / ticks,
        "padding_fraction": executor.padding_fraction,
        "collective_permutes_per_step": permutes,
        "all_reduces_per_step": all_reduces,
    }
    spent = 0.0
    if permutes:
        latency = collective_latency_s(executor.mesh, "stage", "ppermute")
        out["ppermute_latency_us"] = 1e6 * latency
        spent += permutes * latency
    if all_reduces:
        latency = collective_latency_s(executor.mesh, "tensor", "psum")
        out["all_reduce_latency_us"] = 1e6 * latency
        spent += all_reduces * latency
    out["collective_ms_per_step"] = 1e3 * spent
    out["collective_share_of_step"] = 1e3 * spent / step_ms if step_ms == step_ms else None
    return out
