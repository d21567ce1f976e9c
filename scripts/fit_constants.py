"""Fit the performance model's constants that no datasheet or microbenchmark gives, by least
squares on log(predicted / measured), and check them on points from other sources: each GPU
kind's KV-read and FP8 GEMM efficiencies and per-batch cost (the mesh files' [timing] tables),
and each engine's costs (the ``fitted`` tables of jaxpart/data/engines.toml).

    python scripts/fit_constants.py                 # every GPU kind, then every engine
    python scripts/fit_constants.py --gpu h100      # one GPU kind's constants
    python scripts/fit_constants.py --engine vllm   # one engine's costs

The fit set and the check set are split by source, never by point (published.toml's
``fit_sources``; the FasterTransformer GPT guide's placement table, ratios.toml, is in the fit
set): a source's points are all in one set. A GPU kind's constants are fitted on every engine's
fit-set points on that GPU; an engine's costs on its own fit-set points: absolute throughputs
and latencies (as speed: latencies inverted) and speed-ups of one placement over another. The
script reports both sets, before and after; a fitted constant moves into its file by hand,
with this script's output as its source.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxpart.config import load_mesh  # noqa: E402
from jaxpart.perf.engines import Engine, engines  # noqa: E402
from jaxpart.perf.predict import constants_from  # noqa: E402
from jaxpart.perf.ratios import DATA as RATIOS  # noqa: E402
from jaxpart.perf.ratios import ratio_pairs, speedup_of  # noqa: E402
from jaxpart.perf.validation import MESHES, predicted_value, published_points  # noqa: E402

# Each engine cost's bounds, in microseconds (engines.toml's units).
ENGINE_BOUNDS = {
    "kernel_us": (0.0, 100.0),
    "allreduce_us": (0.0, 200.0),
    "allreduce_step_us": (0.0, 20.0),
    "step_us": (0.0, 20_000.0),
    "seq_step_us": (0.0, 500.0),
}
# Each GPU kind's fitted constants (Constants fields) and their bounds; FP8 only where the GPU
# has FP8 GEMMs.
GPU_BOUNDS = {
    "kv_efficiency": (0.3, 1.0),
    "fp8_compute_efficiency": (0.2, 1.0),
    "request_s": (0.0, 20e-3),
}
NO_FP8 = {"a100"}
# GPU kinds that share their achieved efficiencies: the H200 is an H100 with HBM3e (its mesh
# file takes the H100's shares), so the two are fitted as one, on both kinds' points.
FAMILIES = {"h100": ("h100", "h200"), "a100": ("a100",)}


@dataclass
class Setting:
    """The constants a fit tries: engine profiles by name, GPU constants by kind."""

    profiles: dict[str, Engine] = field(default_factory=lambda: dict(engines()))
    timing: dict[str, dict[str, float]] = field(default_factory=dict)

    def predict(self, p: dict, dims: dict) -> float:
        return predicted_value(p, dims, self.timing.get(p["gpu"]), self.profiles[p["engine"]])


# A term: (set, engine, gpu, label, log error given a setting). Errors are log(predicted /
# measured speed): a latency's ratio is inverted, a speed-up compares as it is.
Term = tuple[str, str, str, str, Callable[[Setting], float]]


def all_terms() -> list[Term]:
    out: list[Term] = []
    for p, dims in published_points():
        sign = 1 if p["kind"] == "throughput" else -1
        label = "fp8" if p["dtype"] == "fp8" else "16-bit"

        def absolute(s: Setting, p=p, dims=dims, sign=sign) -> float:
            return sign * math.log(s.predict(p, dims) / p["value"])

        out.append((p["set"], p["engine"], p["gpu"], f"absolute {label}", absolute))
    seen = {p["id"] for p, _ in published_points()}  # already a term above
    for p, ref, dims in ratio_pairs():
        for q in (p, ref):  # a ratios.toml placement's own time, once
            if q["id"] not in seen:
                seen.add(q["id"])

                def time(s: Setting, q=q, dims=dims) -> float:
                    return -math.log(s.predict(q, dims) / q["value"])

                label = f"absolute ({RATIOS.name})"
                out.append((q["set"], q["engine"], q["gpu"], label, time))

        def speedup(s: Setting, p=p, ref=ref, dims=dims) -> float:
            times = s.predict(ref, dims), s.predict(p, dims)
            return math.log(speedup_of(ref, p, *times) / speedup_of(ref, p))

        out.append((p["set"], p["engine"], p["gpu"], f"speed-up {p['group']}", speedup))
    return out


def report(label: str, setting: Setting, terms: list[Term]) -> None:
    rows: dict[tuple[str, str, str], list[float]] = {}
    for which, name, _, kind, error in terms:
        rows.setdefault((which, name, kind), []).append(error(setting))
    for (which, name, kind), logs in sorted(rows.items()):
        a = np.array(logs)
        print(
            f"  {label} {which:5s} {name:18s} {kind:32s} {len(a):4d} points: geo-mean "
            f"{math.exp(a.mean()):.3f}, log-RMS {math.sqrt((a**2).mean()):.3f}"
        )


def nelder_mead(cost, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int) -> np.ndarray:
    """Minimise ``cost`` from ``x0`` inside [lo, hi] (numpy only; a handful of parameters)."""
    simplex = [x0] + [
        np.clip(x0 + np.eye(len(x0))[i] * (hi - lo)[i] * 0.1, lo, hi) for i in range(len(x0))
    ]
    values = [cost(x) for x in simplex]
    for _ in range(steps):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centre = np.mean(simplex[:-1], axis=0)
        reflected = np.clip(centre + (centre - simplex[-1]), lo, hi)
        fr = cost(reflected)
        if fr < values[0]:
            expanded = np.clip(centre + 2 * (centre - simplex[-1]), lo, hi)
            fe = cost(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = np.clip(centre + 0.5 * (simplex[-1] - centre), lo, hi)
            fc = cost(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                simplex = [simplex[0] + 0.5 * (s - simplex[0]) for s in simplex]
                values = [cost(s) for s in simplex]
    return simplex[int(np.argmin(values))]


def fit(setting: Setting, what: str, owner: str, rounds: int, terms: list[Term]) -> None:
    """Fit the constants of one engine (``what`` = "engine") or one GPU kind ("gpu") in place,
    on the fit-set terms they touch, and report those terms before and after."""
    if what == "engine":
        keys = list(setting.profiles[owner].fitted_keys)
        bounds = [ENGINE_BOUNDS[k] for k in keys]
        x0 = [setting.profiles[owner].fitted[k] for k in keys]
        touched = [t for t in terms if t[1] == owner]
    else:
        keys = [k for k in GPU_BOUNDS if not (owner in NO_FP8 and k.startswith("fp8"))]
        bounds = [GPU_BOUNDS[k] for k in keys]
        c = constants_from(load_mesh(MESHES[owner]))
        x0 = [setting.timing.get(owner, {}).get(k, getattr(c, k)) for k in keys]
        touched = [t for t in terms if t[2] in FAMILIES[owner]]
    fitting = [t for t in touched if t[0] == "fit"]
    print(f"{what} {owner}: fits {', '.join(keys)} on {len(fitting)} fit-set terms")
    report("before", setting, touched)
    if not keys or not fitting:
        return
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])

    def apply(x: np.ndarray) -> None:
        values = dict(zip(keys, map(float, np.clip(x, lo, hi)), strict=True))
        if what == "engine":
            setting.profiles[owner] = setting.profiles[owner].with_fitted(values)
        else:
            for member in FAMILIES[owner]:
                setting.timing[member] = values

    def cost(x: np.ndarray) -> float:
        apply(x)
        return sum(error(setting) ** 2 for *_, error in fitting)

    before = dict(zip(keys, x0, strict=True))
    apply(nelder_mead(cost, np.array(x0, dtype=float), lo, hi, rounds * len(keys)))
    report("after ", setting, touched)
    after = setting.profiles[owner].fitted if what == "engine" else setting.timing[owner]
    for k in keys:
        print(f"  {owner}: {k} {before[k]:.4g} -> {after[k]:.4g}")


def main() -> None:
    fitted = sorted(n for n, e in engines().items() if e.fitted_keys)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", choices=sorted(FAMILIES), action="append", default=None)
    parser.add_argument("--engine", choices=sorted(engines()), action="append", default=None)
    parser.add_argument(
        "--rounds", type=int, default=60, help="Nelder-Mead steps per fitted constant"
    )
    args = parser.parse_args()
    if args.gpu is None and args.engine is None:
        args.gpu, args.engine = sorted(FAMILIES), fitted
    setting, terms = Setting(), all_terms()
    for gpu in args.gpu or ():
        fit(setting, "gpu", gpu, args.rounds, terms)
    for name in args.engine or ():
        fit(setting, "engine", name, args.rounds, terms)


if __name__ == "__main__":
    main()
