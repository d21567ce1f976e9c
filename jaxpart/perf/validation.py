"""The performance model held against published measurements (``jaxpart/data/published.toml``).

Each point names a model, a GPU kind, a precision, TP x PP, a batch, input and output lengths
and what its benchmark timed. The point is planned as TP x PP on its GPU kind's mesh file (the
same constants for every point of one kind: nothing is fitted per point) and predicted with the
profile of the engine that ran it (``jaxpart.perf.engines``). The spread of predicted / measured
over the points is the model's uncertainty, which ``simulate`` and ``compare`` quote beside their
predictions. No jax.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache

from jaxpart.config import ConfigError, ModelConfig, RunShape, load_mesh
from jaxpart.config.files import data_root
from jaxpart.perf.engines import Engine, engine
from jaxpart.perf.predict import constants_from, predict, prefill_s
from jaxpart.planning.baseline import baseline_plan

DATA = data_root() / "published.toml"
MESHES = {"h100": "h100x16", "a100": "a100x8", "h200": "h200x8"}
METRICS = ("output_tps", "output_tps_per_gpu", "ttft_ms", "e2e_ms", "tpot_ms")


@dataclass(frozen=True)
class Checked:
    id: str
    engine: str  # the profile in engines.toml it is predicted with
    source: str
    model: str
    gpu: str
    dtype: str
    tp: int
    pp: int
    batch: int
    input_len: int
    output_len: int
    metric: str
    kind: str  # throughput | latency
    measured: float
    predicted: float
    set: str = "check"  # "fit": its source fits the engines' costs; "check": never fitted on

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured

    @property
    def speed_error(self) -> float:
        """Predicted / measured speed: above 1, the model is optimistic, whatever the metric."""
        return self.ratio if self.kind == "throughput" else 1 / self.ratio

    @property
    def precision(self) -> str:
        return "fp8" if self.dtype == "fp8" else "16-bit"


def _model(arch: str, dims: dict, dtype: str, context: int) -> ModelConfig:
    fp8 = dtype == "fp8"
    return ModelConfig(
        name=arch,
        n_layers=dims["n_layers"],
        d_model=dims["d_model"],
        n_heads=dims["n_heads"],
        n_kv_heads=dims.get("n_kv_heads", dims["n_heads"]),
        head_dim=dims.get("head_dim", dims["d_model"] // dims["n_heads"]),
        d_ff=dims["d_ff"],
        vocab=dims["vocab"],
        mlp=dims.get("mlp", "swiglu"),
        dtype="float16" if fp8 else dtype,
        weight_dtype="float8_e4m3fn" if fp8 else None,
        kv_dtype="float8_e4m3fn" if fp8 else None,
        seq_len=context,
        buffer_bytes=0,
    )


def predicted_value(
    point: dict, dims: dict, timing: dict | None = None, profile: Engine | None = None
) -> float:
    """The point's metric, by the performance model with the profile of the engine that ran
    it; ``timing`` replaces constants of the GPU kind's mesh file (``Constants`` fields) and
    ``profile`` the engine's profile, as ``scripts/fit_constants.py`` tries them."""
    mesh = load_mesh(MESHES[point["gpu"]])
    tp, pp, batch = point["tp"], point["pp"], point["batch"]
    prompt, out = max(point["input_len"], 1), point["output_len"]
    shape = RunShape(batch, prompt, max(out, 2), microbatches=1)
    cfg = _model(point["arch"], dims, point["dtype"], shape.context)
    mesh = mesh.sized(tp * pp)
    plan = baseline_plan(cfg, mesh, shape, tp, pp)
    c = constants_from(mesh)
    if timing:
        c = replace(c, **timing)
    metric, profile = point["metric"], profile or engine(point["engine"])
    if metric == "ttft_ms" or out < 2:
        return 1e3 * prefill_s(
            cfg, plan, c, rows=batch, prompt_len=prompt, microbatches=1, engine=profile
        )
    p = predict(point["id"], cfg, plan, c, shape, engine=profile)
    if metric == "output_tps":
        return batch * out / (p.e2e_ms / 1e3)
    if metric == "output_tps_per_gpu":
        return batch * out / (p.e2e_ms / 1e3) / (tp * pp)
    if metric == "e2e_ms":
        return p.e2e_ms
    return p.tpot_ms  # tpot_ms


def published_points() -> list[tuple[dict, dict]]:
    """(point, the model's dims) for every published point, checked for a known metric and
    GPU kind; each point's ``set`` says whether its source is in the fit set or the check
    set."""
    try:
        doc = tomllib.loads(DATA.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{DATA.name}: not found (it ships with jaxpart's sources)") from None
    fit = set(doc["fit_sources"])
    for p in doc["point"]:
        if p["metric"] not in METRICS or p["gpu"] not in MESHES:
            raise ConfigError(f"{DATA.name}: point {p['id']!r}: unknown metric or gpu")
    return [
        ({**p, "set": "fit" if p["source"] in fit else "check"}, doc["arch"][p["arch"]])
        for p in doc["point"]
    ]


@lru_cache(maxsize=1)
def check_all() -> tuple[Checked, ...]:
    """Every published point, measured beside predicted."""
    out = []
    for p, dims in published_points():
        out.append(
            Checked(
                id=p["id"],
                source=p["source"],
                engine=p["engine"],
                model=p["model"],
                gpu=p["gpu"],
                dtype=p["dtype"],
                tp=p["tp"],
                pp=p["pp"],
                batch=p["batch"],
                input_len=p["input_len"],
                output_len=p["output_len"],
                metric=p["metric"],
                kind=p["kind"],
                measured=float(p["value"]),
                predicted=predicted_value(p, dims),
                set=p["set"],
            )
        )
    return tuple(out)


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def log_stats(values: list[float]) -> tuple[float, float]:
    """(geometric mean, sample SD of the logs) of positive ``values``."""
    logs = [math.log(v) for v in values]
    mean = sum(logs) / len(logs)
    return math.exp(mean), math.sqrt(sum((x - mean) ** 2 for x in logs) / max(len(logs) - 1, 1))


def summary(points: tuple[Checked, ...] | None = None) -> dict:
    """Geometric mean and spread of predicted / measured (each metric as published), for
    throughput and latency points apart: a throughput ratio above 1, or a latency ratio below
    1, means the model is optimistic."""
    points = points or check_all()
    out = {}
    for kind in ("throughput", "latency"):
        ratios = [p.ratio for p in points if p.kind == kind]
        geomean, sd = log_stats(ratios)
        out[kind] = {
            "points": len(ratios),
            "geomean_ratio": geomean,
            "log_sd": sd,
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
        }
    return out


@dataclass(frozen=True)
class EngineStats:
    set: str  # fit | check
    engine: str
    precision: str  # 16-bit | fp8
    points: int
    geomean: float  # predicted / measured speed (latencies inverted): above 1, optimistic
    log_sd: float
    low: float
    high: float


def engine_stats(points: tuple[Checked, ...] | None = None) -> list[EngineStats]:
    """Predicted / measured speed per set, engine and precision: the absolute error each
    engine profile carries, on the points it was fitted on and on the points it was not."""
    points = points or check_all()
    keys = sorted(
        {(p.set, p.engine, p.precision) for p in points}, key=lambda k: (k[0] != "fit", *k[1:])
    )
    out = []
    for key in keys:
        errors = [p.speed_error for p in points if (p.set, p.engine, p.precision) == key]
        geomean, sd = log_stats(errors)
        out.append(EngineStats(*key, len(errors), geomean, sd, min(errors), max(errors)))
    return out


def band(kind: str = "throughput") -> tuple[float, float]:
    """The factor range a prediction's true value lies in, from the published points: a
    prediction P of a throughput means a measurement in [P / hi, P / lo], where lo and hi are
    the geometric mean of predicted / measured divided and multiplied by one geometric standard
    deviation."""
    s = summary()[kind]
    spread = math.exp(s["log_sd"])
    return s["geomean_ratio"] / spread, s["geomean_ratio"] * spread
