"""Fit the performance model's timing constants that no datasheet or microbenchmark gives, by
least squares on log(predicted / measured), and check them on points from other sources.

    python scripts/fit_constants.py            # report: fit set and check set, before and after
    python scripts/fit_constants.py --gpu a100 # only that GPU kind's constants

The fit set and the check set are split by source, never by point: a source's points are all
in one set. Constants are per GPU kind (the mesh files' [timing] tables); nothing is fitted per
point. The script only reports; a constant moves into a mesh file by hand, with this script's
output as its source.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxpart.config import load_mesh  # noqa: E402
from jaxpart.perf.predict import constants_from  # noqa: E402
from jaxpart.perf.ratios import ratio_pairs  # noqa: E402
from jaxpart.perf.validation import MESHES, predicted_value, published_points  # noqa: E402

# The fitted constants (Constants fields, in the units the mesh files use) and their bounds.
FITTED = {"launch_s": (0.0, 50e-6), "step_s": (0.0, 5e-3), "hbm_efficiency": (0.3, 1.0)}
# Sources in the fit set (a prefix of the point's source_name; ratios.toml is one source).
FIT_SOURCES = ("TensorRT-LLM performance.md", "FasterTransformer")


def log_errors(timing: dict[str, dict], gpus: set[str]):
    """log(predicted / measured) of every point on ``gpus``, with the set it belongs to."""
    out = []
    for p, dims in published_points():
        if p["gpu"] not in gpus:
            continue
        pred = predicted_value(p, dims, timing.get(p["gpu"]))
        err = math.log(pred / p["value"])
        out.append(("fit" if p["source_name"].startswith(FIT_SOURCES) else "check", err))
    for p, ref, dims in ratio_pairs():
        if p["gpu"] not in gpus:
            continue
        t = timing.get(p["gpu"])
        speedup = predicted_value(ref, dims, t) / predicted_value(p, dims, t)
        out.append(("fit", math.log(speedup / (ref["value"] / p["value"]))))
    return out


def report(label: str, errors) -> None:
    for which in ("fit", "check"):
        logs = np.array([e for s, e in errors if s == which])
        if len(logs):
            print(
                f"{label} {which:5s}: {len(logs):3d} points, geo-mean {math.exp(logs.mean()):.3f}, "
                f"log-RMS {math.sqrt((logs**2).mean()):.3f}"
            )


def fit(gpus: list[str], rounds: int = 60) -> None:
    start = {g: {k: getattr(constants_from(load_mesh(MESHES[g])), k) for k in FITTED} for g in gpus}
    names = [(g, k) for g in gpus for k in FITTED]
    lo = np.array([FITTED[k][0] for _, k in names])
    hi = np.array([FITTED[k][1] for _, k in names])

    def timing_of(x):
        out = {g: {} for g in gpus}
        for (g, k), v in zip(names, np.clip(x, lo, hi), strict=True):
            out[g][k] = float(v)
        return out

    def cost(x):
        return sum(e * e for s, e in log_errors(timing_of(x), set(gpus)) if s == "fit")

    x0 = np.array([start[g][k] for g, k in names])
    report("before", log_errors(timing_of(x0), set(gpus)))
    # Nelder-Mead on the bounded constants (numpy only; a handful of parameters).
    simplex = [x0] + [x0 + np.eye(len(x0))[i] * (hi - lo)[i] * 0.1 for i in range(len(x0))]
    values = [cost(x) for x in simplex]
    for _ in range(rounds * len(x0)):
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
    best = timing_of(simplex[int(np.argmin(values))])
    report("after ", log_errors(best, set(gpus)))
    for g in gpus:
        for k, v in best[g].items():
            unit, scale = ("us", 1e6) if k.endswith("_s") else ("", 1.0)
            print(f"{g}: {k} {start[g][k] * scale:.3g} -> {v * scale:.3g}{unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", choices=sorted(MESHES), action="append", default=None)
    parser.add_argument(
        "--rounds", type=int, default=60, help="Nelder-Mead steps per fitted constant"
    )
    args = parser.parse_args()
    fit(args.gpu or sorted(MESHES), args.rounds)


if __name__ == "__main__":
    main()
