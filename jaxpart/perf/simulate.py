"""`jaxpart simulate`: both placements predicted for a GPU pod, the seed's claims beside them,
the physical floor and a verdict on each claim; optionally a sweep for the crossover. A method
that cannot be planned for the run is named with the reason, and the other still predicted."""

from __future__ import annotations

from jaxpart.config import ConfigError, MeshConfig, ModelConfig, RunShape, format_bytes
from jaxpart.perf.predict import (
    Constants,
    crossover,
    floor,
    predict,
    scaled_model,
    verdicts,
    why,
)
from jaxpart.perf.validation import ratio_band
from jaxpart.planning.baseline import baseline_plan
from jaxpart.planning.memory import check_pod
from jaxpart.planning.partition import PlanError
from jaxpart.planning.placement import PlanChoice, plan_for, resolved
from jaxpart.planning.plan import make_plan


def _layerwise_plan(
    cfg: ModelConfig, mesh: MeshConfig, shape: RunShape, choice: PlanChoice, notes: list
):
    """The layer-wise plan; a capacity that cannot hold the model falls back to hbm, and says so."""
    try:
        return plan_for("layerwise", cfg, mesh, shape, choice)
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


def predict_both(cfg, mesh, c: Constants, choice: PlanChoice, shape: RunShape):
    """Each method that can be planned for this run, predicted. Returns (predictions, plans,
    notes, the methods that cannot be planned with why); an error if neither can."""
    notes, preds, plans, unplanned = [], {}, {}, {}
    for name in ("baseline", "layerwise"):
        try:
            if name == "baseline":
                plan = baseline_plan(cfg, mesh, shape, choice.tp, choice.pp)
                _check_fits(plan, mesh, f"TP{choice.tp}xPP{choice.pp}")
            else:
                plan = _layerwise_plan(cfg, mesh, shape, choice, notes)
            preds[name] = predict(name, cfg, plan, c, resolved(name, plan, shape, choice))
            plans[name] = plan
        except ConfigError as e:
            unplanned[name] = str(e)
    if not preds:
        raise ConfigError(
            f"neither method can be planned for {cfg.name} on {mesh.name}: baseline: "
            f"{unplanned['baseline']}; layer-wise: {unplanned['layerwise']}"
        )
    return preds, plans, notes, unplanned


def run_simulate(cfg, mesh, c: Constants, choice: PlanChoice, shape: RunShape) -> dict:
    """Both methods predicted for ``shape``; a run too large for the pod is refused first, with
    the reason every planner gives (``memory.check_pod``)."""
    shape.check(cfg)
    check_pod(cfg, mesh, shape)
    preds, plans, notes, unplanned = predict_both(cfg, mesh, c, choice, shape)
    both = len(preds) == 2
    fl = floor(cfg, c, mesh.n_devices, shape)
    return {
        "predicted_by": f"perf model, {c.source}",
        "model": cfg.name,
        "dtype": cfg.dtype,
        "batch": shape.batch,
        "prompt_len": shape.prompt_len,
        "gen_len": shape.gen_len,
        "methods": [p.to_dict() for p in preds.values()],
        "unplanned": unplanned,
        "ratios": {
            "tps_layerwise_over_baseline": (
                preds["layerwise"].tps / preds["baseline"].tps if both else None
            ),
            # A ratio's band: its factor range at one geometric SD of the model's error on the
            # published points (jaxpart.perf.validation).
            "band_factors": list(ratio_band()),
        },
        "why": why(preds["layerwise"], preds["baseline"]) if both else None,
        "floor_tpot_ms": fl["floor_tpot_ms"],
        "floor": fl,
        # The seed's claims are about its own model (the file that carries its stated figures).
        "seed_verdicts": verdicts(fl) if cfg.stated is not None else [],
        "plans": {k: v.to_dict() for k, v in plans.items()},
        "calibration": list(c.replaced),
        "notes": notes,
    }


def run_sweep(
    cfg, mesh, c: Constants, choice: PlanChoice, key: str, values: list[int], shape: RunShape
) -> dict:
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
            preds, _, more, unplanned = predict_both(scaled, mesh, c, choice, at)
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
        rows.append(
            {
                "value": value,
                "baseline_tps": preds["baseline"].tps,
                "layerwise_tps": preds["layerwise"].tps,
                "ratio": preds["layerwise"].tps / preds["baseline"].tps,
                "why": why(preds["layerwise"], preds["baseline"]),
            }
        )
    return {"key": key, "rows": rows, "crossover": crossover(rows, key), "notes": notes}
