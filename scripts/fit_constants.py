"""Fit each engine's costs that no datasheet or microbenchmark gives (the ``fitted`` tables of
jaxpart/data/engines.toml) by least squares on log(predicted / measured), and check them on
points from other sources.

    python scripts/fit_constants.py                 # every profile with fitted costs
    python scripts/fit_constants.py --engine vllm   # one profile

The fit set and the check set are split by source, never by point (published.toml's
``fit_sources``; the FasterTransformer GPT guide's placement table, ratios.toml, is in the fit
set): a source's points are all in one set. A profile's costs are fitted on its own engine's
fit-set points only: absolute throughputs and latencies (as speed: latencies inverted) and, for
FasterTransformer, the speed-ups of one placement over another. The script reports both sets,
before and after; a fitted cost moves into engines.toml by hand, with this script's output as
its source.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxpart.perf.engines import Engine, engines  # noqa: E402
from jaxpart.perf.ratios import DATA as RATIOS  # noqa: E402
from jaxpart.perf.ratios import ratio_pairs, speedup_of  # noqa: E402
from jaxpart.perf.validation import predicted_value, published_points  # noqa: E402

# Each fitted cost's bounds, in microseconds.
BOUNDS = {
    "kernel_us": (0.0, 100.0),
    "allreduce_us": (0.0, 200.0),
    "allreduce_step_us": (0.0, 20.0),
    "step_us": (0.0, 20_000.0),
    "seq_step_us": (0.0, 500.0),
}


# A term: (set, label, log error of one prediction given a profile). Errors are log(predicted /
# measured speed): a latency's ratio is inverted, a speed-up compares as it is.
Term = tuple[str, str, Callable[[Engine], float]]


def terms_of(name: str) -> list[Term]:
    out: list[Term] = []
    for p, dims in published_points():
        if p["engine"] != name:
            continue
        sign = 1 if p["kind"] == "throughput" else -1
        label = "fp8" if p["dtype"] == "fp8" else "16-bit"

        def absolute(e: Engine, p=p, dims=dims, sign=sign) -> float:
            return sign * math.log(predicted_value(p, dims, profile=e) / p["value"])

        out.append((p["set"], f"absolute {label}", absolute))
    seen = {p["id"] for p, _ in published_points()}  # already a term above
    for p, ref, dims in ratio_pairs():
        if p["engine"] != name:
            continue
        for q in (p, ref):  # a ratios.toml placement's own time, once
            if q["id"] not in seen:
                seen.add(q["id"])

                def time(e: Engine, q=q, dims=dims) -> float:
                    return -math.log(predicted_value(q, dims, profile=e) / q["value"])

                out.append((q["set"], f"absolute ({RATIOS.name})", time))

        def speedup(e: Engine, p=p, ref=ref, dims=dims) -> float:
            times = predicted_value(ref, dims, profile=e), predicted_value(p, dims, profile=e)
            return math.log(speedup_of(ref, p, *times) / speedup_of(ref, p))

        out.append((p["set"], f"speed-up {p['group']}", speedup))
    return out


def report(label: str, profile: Engine, terms: list[Term]) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    for which, kind, error in terms:
        rows.setdefault((which, kind), []).append(error(profile))
    for (which, kind), logs in sorted(rows.items()):
        a = np.array(logs)
        print(
            f"  {label} {which:5s} {kind:36s} {len(a):4d} points: geo-mean "
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


def fit(name: str, rounds: int) -> None:
    profile = engines()[name]
    keys = list(profile.fitted_keys)
    terms = terms_of(name)
    fitting = [t for t in terms if t[0] == "fit"]
    print(f"engine {name}: fits {', '.join(keys) or 'nothing'} on {len(fitting)} fit-set terms")
    report("before", profile, terms)
    if not keys or not fitting:
        return
    lo = np.array([BOUNDS[k][0] for k in keys])
    hi = np.array([BOUNDS[k][1] for k in keys])

    def profile_of(x: np.ndarray) -> Engine:
        return profile.with_fitted(dict(zip(keys, map(float, np.clip(x, lo, hi)), strict=True)))

    def cost(x: np.ndarray) -> float:
        e = profile_of(x)
        return sum(error(e) ** 2 for _, _, error in fitting)

    x0 = np.array([profile.fitted[k] for k in keys])
    best = profile_of(nelder_mead(cost, x0, lo, hi, rounds * len(keys)))
    report("after ", best, terms)
    for k in keys:
        print(f"  {name}: {k} {profile.fitted[k]:.3g} -> {best.fitted[k]:.3g}")


def main() -> None:
    fitted = sorted(n for n, e in engines().items() if e.fitted_keys)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(engines()), action="append", default=None)
    parser.add_argument("--rounds", type=int, default=60, help="Nelder-Mead steps per fitted cost")
    args = parser.parse_args()
    for name in args.engine or fitted:
        fit(name, args.rounds)


if __name__ == "__main__":
    main()
