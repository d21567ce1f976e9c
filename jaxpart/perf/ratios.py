"""The performance model held against published *ratios*: the same model on the same hardware
and engine under two placements (``jaxpart/data/ratios.toml``). What jaxpart answers is a
ratio (layer-wise / baseline), so its band comes from the error on ratios of the same kinds,
not from absolute errors. Each point is predicted like a published point
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
from jaxpart.perf.validation import predicted_value

DATA = data_root() / "ratios.toml"
# Each group's reference placement (tp, pp): the placement its points are a speed-up over.
REFERENCES = {"tp_within_node": (1, 1), "tp_across_nodes": (16, 1), "pp_against_tp": (16, 1)}
GROUP_WORDS = {
    "tp_within_node": "TP 2-8 inside a node against one GPU",
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
            out.append((p, ref, doc["arch"][p["arch"]]))
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
            measured=ref["value"] / p["value"],
            predicted=time_of(ref, dims) / time_of(p, dims),
        )
        for p, ref, dims in ratio_pairs()
    )


def group_stats() -> dict[str, GroupStats]:
    """Per group: the geometric mean of predicted / measured speed-up, its log-RMS (the band
    printed on a ratio of this kind is one log-RMS either side), and the band's coverage."""
    out = {}
    for group in REFERENCES:
        errors = [r.error for r in ratio_points() if r.group == group]
        logs = [math.log(e) for e in errors]
        rms = math.sqrt(sum(x * x for x in logs) / len(logs))
        covered = sum(abs(x) <= rms for x in logs) / len(logs)
        out[group] = GroupStats(
            group,
            len(errors),
            math.exp(sum(logs) / len(logs)),
            rms,
            min(errors),
            max(errors),
            covered,
        )
    return out


def verdict_band() -> tuple[float, float, int]:
    """The band of a predicted layer-wise / baseline ratio: the log-RMS errors of the ratio
    kinds it carries (``VERDICT_GROUPS``), added in quadrature; and how many ratio points
    that rests on."""
    stats = group_stats()
    sd = math.sqrt(sum(stats[g].log_rms ** 2 for g in VERDICT_GROUPS))
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
