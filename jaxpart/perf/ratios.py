"""The performance model held against published *ratios*: the same model on the same hardware
and engine under two placements. What jaxpart answers is a ratio (layer-wise / baseline), so
its band comes from the error on ratios of the same kinds, not from absolute errors. The pairs
come from ``jaxpart/data/ratios.toml`` (FasterTransformer's GPT guide: the fit set) and from
families of ``published.toml`` points that differ only in their tensor split inside a node
(each in its source's set). Each point is predicted like a published point
(``validation.predicted_value``: its GPU kind's mesh file, its engine's profile), paired with
its reference placement, and judged on predicted / measured speed-up. No jax.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache

from jaxpart.config import ConfigError
from jaxpart.config.files import data_root
from jaxpart.perf.validation import predicted_value, published_points

DATA = data_root() / "ratios.toml"
# Each group's reference placement (tp, pp): the placement its points are a speed-up over.
REFERENCES = {"tp_within_node": (1, 1), "tp_across_nodes": (16, 1), "pp_against_tp": (16, 1)}
GROUP_WORDS = {
    "tp_within_node": "TP 2-8 inside a node against fewer GPUs",
    "tp_across_nodes": "TP32 over 4 nodes against TP16 over 2",
    "pp_against_tp": "TP8 x PP3 over 3 nodes against TP16 over 2",
}
# The groups a layer-wise / baseline ratio carries: the baseline's TP8 against unsplit stages,
# and pipeline stages across nodes against tensor parallelism.
VERDICT_GROUPS = ("tp_within_node", "pp_against_tp")


@dataclass(frozen=True)
class RatioPoint:
    id: str
    group: str
    tp: int
    pp: int
    reference: str  # the id of the reference placement's point
    measured: float  # reference time / this placement's time, as published
    predicted: float  # the same, by the performance model
    engine: str = "fastertransformer"
    set: str = "fit"  # its source's set: "fit" (fits the engines' costs) or "check"

    @property
    def error(self) -> float:
        """Predicted / measured speed-up."""
        return self.predicted / self.measured


@dataclass(frozen=True)
class GroupStats:
    group: str
    points: int
    geomean: float  # of predicted / measured
    log_rms: float  # root mean square of log(predicted / measured): bias and spread together
    low: float
    high: float
    coverage: float  # share of points whose measured speed-up lies in the printed band
    band_rms: float  # the printed band: one this either side (``band_rms``), the group's
    set: str = "all"  # the points it covers: fit, check or all


def ratio_pairs() -> list[tuple[dict, dict, dict]]:
    """(point, its reference point, the model's dims) for every unambiguous published
    placement whose reference was measured; each point carries the source's GPU, dtype, metric
    and engine, ready for ``validation.predicted_value``."""
    try:
        doc = tomllib.loads(DATA.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{DATA.name}: not found (it ships with jaxpart's sources)") from None
    common = {k: doc["source"][k] for k in ("gpu", "dtype", "metric", "engine")}
    points = {}
    for p in doc["point"]:
        key = (p["arch"], p["batch"], p["input_len"], p["output_len"])
        points[key, p["tp"], p["pp"]] = {**common, **p}
    out = []
    for (key, _, _), p in points.items():
        if p["group"] == "reference" or p.get("ambiguous"):
            continue
        ref = points.get((key, *REFERENCES[p["group"]]))
        if ref is not None:  # else the reference did not fit (out of memory in the source)
            out.append(({**p, "set": "fit"}, {**ref, "set": "fit"}, doc["arch"][p["arch"]]))
    return out + published_pairs()


def published_pairs() -> list[tuple[dict, dict, dict]]:
    """Pairs among published.toml's points: one source's runs of the same model, engine, GPU,
    precision, metric, batch and lengths, pipeline-free, that differ only in a tensor split
    inside one node. The family's smallest split is the reference of the others (group
    tp_within_node)."""
    families: dict[tuple, list[tuple[dict, dict]]] = {}
    for p, dims in published_points():
        if p["pp"] == 1 and p["tp"] <= 8:
            keys = ("source", "engine", "arch", "gpu", "dtype", "metric", "batch")
            key = (*(p[k] for k in keys), p["input_len"], p["output_len"])
            families.setdefault(key, []).append((p, dims))
    out = []
    for family in families.values():
        ref, dims = min(family, key=lambda x: x[0]["tp"])
        for p, _ in family:
            if p["tp"] != ref["tp"]:
                out.append(({**p, "group": "tp_within_node"}, ref, dims))
    return out


@lru_cache(maxsize=1)
def ratio_points() -> tuple[RatioPoint, ...]:
    """Every unambiguous published placement, as a speed-up over its reference, measured and
    predicted."""
    predicted = {}  # a reference serves several points: predict it once

    def time_of(p: dict, dims: dict) -> float:
        if p["id"] not in predicted:
            predicted[p["id"]] = predicted_value(p, dims)
        return predicted[p["id"]]

    return tuple(
        RatioPoint(
            id=p["id"],
            group=p["group"],
            tp=p["tp"],
            pp=p["pp"],
            reference=ref["id"],
            measured=speedup_of(ref, p),
            predicted=speedup_of(ref, p, time_of(ref, dims), time_of(p, dims)),
            engine=p["engine"],
            set=p["set"],
        )
        for p, ref, dims in ratio_pairs()
    )


def speedup_of(ref: dict, p: dict, ref_value: float | None = None, value: float | None = None):
    """How much faster ``p`` runs than ``ref``, from their metric's values (published, or the
    ones given): a time's ratio is ref / p, a throughput's p / ref."""
    a = ref["value"] if ref_value is None else ref_value
    b = p["value"] if value is None else value
    throughput = p["metric"] in ("output_tps", "output_tps_per_gpu")
    return b / a if throughput else a / b


def group_stats() -> dict[str, GroupStats]:
    """Per group, over its fit and check points together: the geometric mean of predicted /
    measured speed-up, its log-RMS, and the coverage of the band printed on a ratio of this
    kind (one ``band_rms`` either side)."""
    return {group: _stats(group, "all") for group in REFERENCES}


def set_stats() -> list[GroupStats]:
    """The same per group and set (fit, check), the band still the group's over both."""
    present = {(r.group, r.set) for r in ratio_points()}
    return [_stats(g, s) for g in REFERENCES for s in ("fit", "check") if (g, s) in present]


def band_rms(group: str) -> float:
    """The log-RMS error of a ratio kind, as its band uses it: the larger of its fit set's and
    its check set's, since a new prediction is out of sample and the fitted costs flatter the
    points they were fitted on."""
    out = 0.0
    for which in ("fit", "check"):
        logs = [math.log(r.error) for r in ratio_points() if (r.group, r.set) == (group, which)]
        if logs:
            out = max(out, math.sqrt(sum(x * x for x in logs) / len(logs)))
    return out


def _stats(group: str, which: str) -> GroupStats:
    rms = band_rms(group)
    errors = [r.error for r in ratio_points() if r.group == group and which in ("all", r.set)]
    logs = [math.log(e) for e in errors]
    return GroupStats(
        group,
        len(errors),
        math.exp(sum(logs) / len(logs)),
        math.sqrt(sum(x * x for x in logs) / len(logs)),
        min(errors),
        max(errors),
        sum(abs(x) <= rms for x in logs) / len(logs),
        rms,
        which,
    )


def verdict_band() -> tuple[float, float, int]:
    """The band of a predicted layer-wise / baseline ratio: the log-RMS errors of the ratio
    kinds it carries (``VERDICT_GROUPS``), added in quadrature; and how many ratio points
    that rests on."""
    stats = group_stats()
    sd = math.sqrt(sum(stats[g].band_rms ** 2 for g in VERDICT_GROUPS))
    return math.exp(-sd), math.exp(sd), sum(stats[g].points for g in VERDICT_GROUPS)


def ratio_words(ratio: float) -> str:
    """A predicted layer-wise / baseline ratio with its band, and what it lets one say."""
    lo, hi, points = verdict_band()
    low, high = ratio * lo, ratio * hi
    if low > 1:
        verdict = "layer-wise faster beyond the model's error"
    elif high < 1:
        verdict = "baseline faster beyond the model's error"
    else:
        verdict = "within the model's error: no winner can be named"
    return (
        f"{ratio:.2f}x (predicted; {low:.2f}-{high:.2f}x at one RMS error of the model on "
        f"{points} published placement ratios): {verdict}"
    )
