"""`jaxpart simulate`: both placements predicted for a GPU pod, the seed's claims beside them,
the physical floor and a verdict on each claim; optionally a sweep for the crossover. A method
that cannot be planned for the run is named with the reason, and the other still predicted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from jaxpart.config import (
    PLACEMENTS,
    ConfigError,
    MeshConfig,
    Method,
    ModelConfig,
    RunShape,
    format_bytes,
)
from jaxpart.perf.engines import Engine
from jaxpart.perf.predict import (
    JAXPART,
    Constants,
    Floor,
    Prediction,
    SeedVerdict,
    floor,
    predict,
    scaled_model,
    verdicts,
    why,
)
from jaxpart.perf.ratios import verdict_band
from jaxpart.planning.baseline import baseline_plan
from jaxpart.planning.capacity import Capacity, plan_capacity
from jaxpart.planning.memory import check_pod
from jaxpart.planning.partition import PlanError
from jaxpart.planning.placement import PlanChoice, plan_for, resolved
from jaxpart.planning.plan import Plan, make_plan, microbatch_count


@dataclass(frozen=True)
class SweepRow:
    """Both methods predicted at one value of the swept setting."""

    value: int
    baseline_tps: float
    layerwise_tps: float
    ratio: float  # layer-wise / baseline TPS
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sweep:
    """Both methods at each value of ``key``, where their TPS ratio crosses 1, and why the
    values left out of ``rows`` were left out."""

    key: str
    rows: tuple[SweepRow, ...]
    crossover: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "rows": [r.to_dict() for r in self.rows],
            "crossover": self.crossover,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Simulation:
    """Both methods predicted for one run of a model on a mesh: each prediction and plan by
    method, the methods that cannot be planned with why, the layer-wise / baseline TPS ratio
    with its band, the physical floor, the seed's claims held against it, and notes."""

    predicted_by: str
    model: str
    dtype: str
    shape: RunShape
    predictions: dict[Method, Prediction]
    plans: dict[Method, Plan]
    unplanned: dict[Method, str]  # method -> why it cannot be planned
    ratio: float | None  # layer-wise / baseline TPS; None unless both are predicted
    # The ratio's band: its factor range at one RMS error of the model on published placement
    # ratios of the kinds it carries (jaxpart.perf.ratios).
    band: tuple[float, float]
    why: str | None  # what decides the ratio, per decode tick
    floor: Floor
    # The seed's claims are about its own model (the file that carries its stated figures).
    seed_verdicts: tuple[SeedVerdict, ...]
    calibration: tuple[str, ...]  # what a bench_gpu.py calibration replaced
    notes: tuple[str, ...]
    sweep: Sweep | None = None
    # each plan's largest batch at the run's context, as the engine uses memory (predicted)
    capacities: dict[Method, Capacity] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "predicted_by": self.predicted_by,
            "model": self.model,
            "dtype": self.dtype,
            "batch": self.shape.batch,
            "prompt_len": self.shape.prompt_len,
            "gen_len": self.shape.gen_len,
            "methods": [p.to_dict() for p in self.predictions.values()],
            "unplanned": dict(self.unplanned),
            "ratios": {"tps_layerwise_over_baseline": self.ratio, "band_factors": list(self.band)},
            "why": self.why,
            "floor_tpot_ms": self.floor.floor_tpot_ms,
            "floor": self.floor.to_dict(),
            "seed_verdicts": [v.to_dict() for v in self.seed_verdicts],
            "plans": {k: v.to_dict() for k, v in self.plans.items()},
            "max_batch": {k: v.to_dict() for k, v in self.capacities.items()},
            "calibration": list(self.calibration),
            "notes": list(self.notes),
        }
        if self.sweep is not None:
            out["sweep"] = self.sweep.to_dict()
        return out


def _layerwise_plan(
    cfg: ModelConfig, mesh: MeshConfig, shape: RunShape, choice: PlanChoice, notes: list
):
    """The layer-wise plan; a capacity that cannot hold the model falls back to hbm, and says so."""
    try:
        return plan_for(Method.LAYERWISE, cfg, mesh, shape, choice)
    except PlanError as e:
        plan = make_plan(
            cfg, mesh, shape, "hbm", choice.strategy, layers_per_stage=choice.layers_per_stage
        )
        notes.append(
            f"{cfg.name}: layer-wise at capacity {choice.capacity or mesh.default_capacity}"
            f" is impossible ({e}); planned at hbm instead"
        )
        return plan


def _check_fits(plan, mesh, name: str) -> None:
    """A placement whose device holds more than its HBM (by the memory model) is not predicted."""
    worst = max(plan.stages, key=lambda s: s.bytes)
    if worst.tier == "none":
        hbm = mesh.tiers["hbm"].capacity_bytes
        raise ConfigError(
            f"{name}: a device would hold {format_bytes(worst.bytes)} (memory model), more than "
            f"its {format_bytes(hbm)} of HBM; a larger --tp or --pp splits it further"
        )


def _check_pool(cfg, mesh, shape: RunShape, plan: Plan, engine: Engine, label: str) -> None:
    room = plan_capacity(cfg, mesh, plan, shape, engine.memory)
    if room.batch < shape.batch:
        raise ConfigError(
            f"{label}: {engine.name}'s KV cache holds {room.batch:,} sequences at a context of "
            f"{room.positions:,} (memory model), fewer than the batch of {shape.batch:,}"
        )


def at_capacity(
    name: Method, cfg, plan: Plan, c: Constants, shape: RunShape, room: Capacity, engine: Engine
) -> tuple[RunShape, Prediction] | None:
    """``plan`` predicted at the largest batch its KV pools hold (whole rounds of its stages
    per replica, enough microbatches to fill its pipe), with that run; None if it holds no
    sequence."""
    per_replica = room.in_rounds(plan.n_stages)
    if per_replica < 1:
        return None
    at = shape.replace(batch=per_replica * plan.data_parallel, microbatches=None)
    at = at.replace(microbatches=microbatch_count(plan.n_stages, per_replica))
    return at, predict(name, cfg, plan, c, at, engine=engine)


def predict_both(
    cfg, mesh, c: Constants, choice: PlanChoice, shape: RunShape, engine: Engine = JAXPART
):
    """Each method that can be planned for this run, predicted as ``engine`` would run it.
    Returns (predictions, plans, notes, the methods that cannot be planned with why); an error
    if neither can."""
    notes, preds, plans, unplanned = [], {}, {}, {}
    for name in PLACEMENTS:
        try:
            label = f"TP{choice.tp}xPP{choice.pp}"
            if name == Method.BASELINE:
                plan = baseline_plan(cfg, mesh, shape, choice.tp, choice.pp)
                if engine is JAXPART:  # its executors: the memory model's whole account
                    _check_fits(plan, mesh, label)
            else:
                plan = _layerwise_plan(cfg, mesh, shape, choice, notes)
                label = "the layer-wise plan"
            if engine is not JAXPART:  # the engine's KV pool must hold the batch
                _check_pool(cfg, mesh, shape, plan, engine, label)
            at = resolved(name, plan, shape, choice)
            preds[name] = predict(name, cfg, plan, c, at, engine=engine)
            plans[name] = plan
        except ConfigError as e:
            unplanned[name] = str(e)
    if not preds:
        raise ConfigError(
            f"neither method can be planned for {cfg.name} on {mesh.name}: baseline: "
            f"{unplanned[Method.BASELINE]}; layer-wise: {unplanned[Method.LAYERWISE]}"
        )
    return preds, plans, notes, unplanned


def run_simulate(
    cfg, mesh, c: Constants, choice: PlanChoice, shape: RunShape, engine: Engine = JAXPART
) -> Simulation:
    """Both methods predicted for ``shape`` as ``engine`` runs them (default: jaxpart's own
    executors); a run too large for the pod is refused first, with the reason every planner
    gives (``memory.check_pod``)."""
    shape.check(cfg)
    check_pod(cfg, mesh, shape)
    preds, plans, notes, unplanned = predict_both(cfg, mesh, c, choice, shape, engine)
    both = len(preds) == 2
    lw, base = preds.get(Method.LAYERWISE), preds.get(Method.BASELINE)
    fl = floor(cfg, c, mesh.n_devices, shape)
    return Simulation(
        predicted_by=f"perf model, {c.source}"
        + ("" if engine is JAXPART else f", engine {engine.name}"),
        model=cfg.name,
        dtype=cfg.dtype,
        shape=shape,
        predictions=preds,
        plans=plans,
        unplanned=unplanned,
        ratio=lw.tps / base.tps if both else None,
        band=verdict_band()[:2],
        why=why(lw, base) if both else None,
        floor=fl,
        seed_verdicts=verdicts(fl) if cfg.stated is not None else (),
        calibration=tuple(c.replaced),
        notes=tuple(notes),
        capacities={
            name: plan_capacity(cfg, mesh, plan, shape, engine.memory)
            for name, plan in plans.items()
        },
    )


def run_sweep(
    cfg,
    mesh,
    c: Constants,
    choice: PlanChoice,
    key: str,
    values: list[int],
    shape: RunShape,
    engine: Engine = JAXPART,
) -> Sweep:
    """Both methods at each value of ``key`` (``d_model``: a scaled model; ``batch``: the
    shape's batch), and where their TPS ratio crosses 1."""
    rows, notes = [], []
    for value in values:
        if key == "batch":
            scaled, at = cfg, shape.replace(batch=value)
        else:
            scaled, at = scaled_model(cfg, key, value), shape
        try:
            check_pod(scaled, mesh, at)
            preds, _, more, unplanned = predict_both(scaled, mesh, c, choice, at, engine)
        except ConfigError as e:
            notes.append(f"{key} = {value}: not predicted: {e}")
            continue
        notes += more
        if unplanned:
            method, reason = next(iter(unplanned.items()))
            alone = "".join(
                f"; {name} alone: {p.tps:,.0f} TPS predicted" for name, p in preds.items()
            )
            notes.append(f"{key} = {value}: {method} cannot be planned ({reason}){alone}")
            continue
        lw, base = preds[Method.LAYERWISE], preds[Method.BASELINE]
        rows.append(
            SweepRow(
                value=value,
                baseline_tps=base.tps,
                layerwise_tps=lw.tps,
                ratio=lw.tps / base.tps,
                why=why(lw, base),
            )
        )
    return Sweep(key, tuple(rows), crossover(rows, key), tuple(notes))


def crossover(rows: list[SweepRow], key: str) -> str:
    """Where the layer-wise / baseline TPS ratio crosses 1, in words."""
    if not rows:
        return f"no value of {key} could be planned both ways"
    for a, b in zip(rows, rows[1:], strict=False):
        if (a.ratio >= 1) != (b.ratio >= 1):
            winner_low = "layer-wise" if a.ratio >= 1 else "the baseline"
            return (
                f"crossover between {key} = {a.value} and {b.value}: {winner_low} "
                f"wins at {key} <= {a.value}"
            )
    if all(r.ratio >= 1 for r in rows):
        return f"layer-wise wins over the whole range of {key}"
    return f"layer-wise never overtakes the baseline for {key} in this range"
