"""Crossover maps: which placement the performance model names the winner over a grid of two of
batch, prompt length, output length, mesh and model (``jaxpart simulate --map``). No jax.

Each cell predicts the baseline TP x PP of ``simulate``, and the best layer-wise plan and the best
TP x PP that ``plan --auto`` finds for the cell's run, as one engine runs them. The winner is the
fastest by predicted TPS; its margin is its TPS over the runner-up's. Where the band of a ratio
(``ratios.verdict_band``: the model's error on published placement ratios) covers 1, the cell
names no winner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from jaxpart.config import ConfigError, MeshConfig, Method, ModelConfig, RunShape
from jaxpart.perf.engines import Engine
from jaxpart.perf.predict import constants_from
from jaxpart.perf.ratios import verdict_band
from jaxpart.perf.search import search_plans
from jaxpart.perf.simulate import predict_both
from jaxpart.planning.memory import check_pod
from jaxpart.planning.placement import PlanChoice

AXES = ("batch", "prompt", "gen", "mesh", "model")
AXIS_WORDS = {
    "batch": "batch",
    "prompt": "prompt tokens",
    "gen": "new tokens",
    "mesh": "mesh",
    "model": "model",
}
CANDIDATES = ("layerwise", "baseline", "best TPxPP")


@dataclass(frozen=True)
class Cell:
    x: str
    y: str
    tps: dict[str, float]  # candidate -> predicted TPS (the ones that could be planned)
    labels: dict[str, str]  # candidate -> its plan, in words
    winner: str | None  # None: no candidate could be planned, or the band covers 1
    margin: float | None  # the fastest's TPS over the runner-up's
    note: str = ""

    @property
    def fastest(self) -> str | None:
        return max(self.tps, key=self.tps.get) if self.tps else None

    def shown(self, name: str) -> str:
        """A candidate with its TP x PP (``baseline TP8xPP1``), for tables and plots."""
        plan = self.labels.get(name, "").split(",")[0].split(" (")[0]
        return (
            f"{name} {plan}"
            if plan.startswith("TP") and name != "best TPxPP"
            else (f"{plan}" if name == "best TPxPP" else name)
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"fastest": self.fastest}


@dataclass(frozen=True)
class CrossoverMap:
    x_key: str
    x_values: tuple[str, ...]
    y_key: str
    y_values: tuple[str, ...]
    cells: tuple[Cell, ...]  # row by row: y outer, x inner
    band: tuple[float, float]
    predicted_by: str

    def cell(self, x: str, y: str) -> Cell:
        return next(c for c in self.cells if (c.x, c.y) == (x, y))

    def to_dict(self) -> dict:
        return {
            "x": {"axis": self.x_key, "values": list(self.x_values)},
            "y": {"axis": self.y_key, "values": list(self.y_values)},
            "band_factors": list(self.band),
            "predicted_by": self.predicted_by,
            "cells": [c.to_dict() for c in self.cells],
        }


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``batch=1,8,64`` -> ("batch", ["1", "8", "64"]), checked."""
    key, sep, values = text.partition("=")
    key = key.strip()
    items = [v.strip() for v in values.split(",")] if sep else []
    if key not in AXES or not items or not all(items):
        raise ConfigError(
            f"--map {text!r}: expected AXIS=V1,V2,... with AXIS one of {list(AXES)}, e.g. "
            "batch=1,8,64,256"
        )
    if key in ("batch", "prompt", "gen"):
        bad = [v for v in items if not v.isdigit() or int(v) < 1]
        if bad:
            raise ConfigError(f"--map {key}={values}: {bad[0]!r} is not a whole number >= 1")
    return key, items


def _with_axis(shape: RunShape, key: str, value: str) -> RunShape:
    if key == "batch":
        return shape.replace(batch=int(value))
    if key == "prompt":
        return shape.replace(prompt_len=int(value))
    if key == "gen":
        return shape.replace(gen_len=int(value))
    return shape


# (model name or None, mesh name or None) -> the cell's model, mesh, run shape and baseline
# choice: the caller's, or the named model's or mesh's own where that axis is swept
Resolve = Callable[[str | None, str | None], tuple[ModelConfig, MeshConfig, RunShape, PlanChoice]]


def _cell(
    model: ModelConfig, mesh: MeshConfig, shape: RunShape, choice: PlanChoice, engine: Engine
) -> tuple[dict, dict, str]:
    """Each candidate's predicted TPS and plan in words, or why none could be planned."""
    shape.check(model)
    check_pod(model, mesh, shape)
    c = constants_from(mesh)
    tps, labels, layouts = {}, {}, {}
    try:
        preds, plans, _, unplanned = predict_both(model, mesh, c, choice, shape, engine)
    except ConfigError as e:  # neither of simulate's plans: the searches below may still plan
        preds, plans, unplanned = {}, {}, {Method.BASELINE: str(e)}
    if Method.BASELINE in preds:
        plan = plans[Method.BASELINE]
        tps["baseline"], layouts["baseline"] = preds[Method.BASELINE].tps, _layout(plan)
        labels["baseline"] = f"TP{plan.split}xPP{plan.n_stages}"
    unplanned.pop(Method.LAYERWISE, None)  # the search below plans it for this batch
    for method, name in ((Method.LAYERWISE, "layerwise"), (Method.BASELINE, "best TPxPP")):
        try:
            best = search_plans(model, mesh, shape, methods=(method,), engine=engine)[0]
        except ConfigError as e:
            unplanned[name] = str(e)
            continue
        same = [n for n, lay in layouts.items() if lay == _layout(best.plan)]
        if same:  # the same placement as one already here: keep it once, at its best
            tps[same[0]] = max(tps[same[0]], best.prediction.tps)
            labels[same[0]] += (
                f" (= the {name})" if name.startswith("best") else f" (= the best {name})"
            )
            continue
        tps[name], layouts[name] = best.prediction.tps, _layout(best.plan)
        labels[name] = f"{best.how}, M={best.microbatches}"
    return tps, labels, "; ".join(f"{k}: {v}" for k, v in unplanned.items())


def _layout(plan) -> tuple:
    return (tuple(plan.layers_per_stage), plan.split, plan.data_parallel)


def run_map(
    resolve: Resolve,
    engine: Engine,
    x: tuple[str, list[str]],
    y: tuple[str, list[str]],
    progress=None,
) -> CrossoverMap:
    """The winner of every cell of the grid ``x`` by ``y`` (``progress(done, total)`` after
    each)."""
    if x[0] == y[0]:
        raise ConfigError(f"--map: both axes are {x[0]!r}; sweep two different ones")
    lo, hi = verdict_band()[:2]
    cells, total = [], len(x[1]) * len(y[1])
    for yv in y[1]:
        for xv in x[1]:
            named = {x[0]: xv, y[0]: yv}
            try:
                model, mesh, shape, choice = resolve(named.get("model"), named.get("mesh"))
                for key, value in named.items():
                    shape = _with_axis(shape, key, value)
                tps, labels, note = _cell(model, mesh, shape, choice, engine)
            except ConfigError as e:
                tps, labels, note = {}, {}, str(e)
            winner = margin = None
            if len(tps) >= 2:
                ranked = sorted(tps, key=tps.get, reverse=True)
                margin = tps[ranked[0]] / tps[ranked[1]]
                if margin * lo > 1:  # beyond the band: the fastest is named
                    winner = ranked[0]
            elif len(tps) == 1:
                winner = next(iter(tps))
                note = note or "the only placement that could be planned"
            cells.append(Cell(xv, yv, tps, labels, winner, margin, note))
            if progress is not None:
                progress(len(cells), total)
    swept = "each cell's mesh file" if "mesh" in (x[0], y[0]) else f"meshes/{mesh.name}.toml"
    by = f"perf model, {swept}, engine {engine.name}"
    return CrossoverMap(x[0], tuple(x[1]), y[0], tuple(y[1]), tuple(cells), (lo, hi), by)
