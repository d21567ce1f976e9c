"""`jaxpart simulate`: both placements predicted for a GPU pod, the seed's claims beside them,
the physical floor and a verdict on each claim; optionally a sweep for the crossover."""

from __future__ import annotations

from jaxpart.baseline import baseline_plan
from jaxpart.config import MeshConfig, ModelConfig
from jaxpart.partition import PlanError
from jaxpart.perfmodel import (
    Constants,
    crossover,
    floor,
    predict,
    scaled_model,
    verdicts,
    why,
)
from jaxpart.placement import PlanChoice, default_microbatches, plan_for
from jaxpart.plan import make_plan


def _plans(cfg: ModelConfig, mesh: MeshConfig, choice: PlanChoice):
    """The baseline and layer-wise plans; a layer-wise capacity that cannot hold the model
    falls back to hbm, and says so."""
    notes = []
    try:
        layerwise = plan_for("layerwise", cfg, mesh, choice)
    except PlanError as e:
        layerwise = make_plan(
            cfg, mesh, "hbm", choice.strategy, layers_per_stage=choice.layers_per_stage
        )
        notes.append(
            f"{cfg.name}: layer-wise at capacity {choice.capacity or mesh.default_capacity}"
            f" is impossible ({e}); planned at hbm instead"
        )
    return baseline_plan(cfg, mesh, choice.tp, choice.pp), layerwise, notes


def predict_both(cfg, mesh, c: Constants, choice, *, batch, prompt_len, gen_len, microbatches):
    base_plan, lw_plan, notes = _plans(cfg, mesh, choice)
    out = {}
    for name, plan in (("baseline", base_plan), ("layerwise", lw_plan)):
        m = microbatches or default_microbatches(plan, batch)
        out[name] = predict(
            name, cfg, plan, c, batch=batch, prompt_len=prompt_len, gen_len=gen_len, microbatches=m
        )
    return out, {"baseline": base_plan, "layerwise": lw_plan}, notes


def run_simulate(
    cfg, mesh, c: Constants, choice: PlanChoice, *, batch, prompt_len, gen_len, microbatches=None
) -> dict:
    preds, plans, notes = predict_both(
        cfg,
        mesh,
        c,
        choice,
        batch=batch,
        prompt_len=prompt_len,
        gen_len=gen_len,
        microbatches=microbatches,
    )
    fl = floor(cfg, c, mesh.n_devices, batch=batch, prompt_len=prompt_len, gen_len=gen_len)
    return {
        "predicted_by": f"perf model, {c.source}",
        "model": cfg.name,
        "dtype": cfg.dtype,
        "batch": batch,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "methods": [p.to_dict() for p in preds.values()],
        "ratios": {"tps_layerwise_over_baseline": preds["layerwise"].tps / preds["baseline"].tps},
        "why": why(preds["layerwise"], preds["baseline"]),
        "floor_tpot_ms": fl["floor_tpot_ms"],
        "floor": fl,
        "seed_verdicts": verdicts(fl),
        "plans": {k: v.to_dict() for k, v in plans.items()},
        "calibration": list(c.replaced),
        "notes": notes,
    }


def run_sweep(
    cfg,
    mesh,
    c: Constants,
    choice: PlanChoice,
    key: str,
    values: list[int],
    *,
    batch,
    prompt_len,
    gen_len,
    microbatches=None,
) -> dict:
    rows, notes = [], []
    for value in values:
        scaled = scaled_model(cfg, key, value)
        b = scaled.batch if key == "batch" else batch
        preds, _, more = predict_both(
            scaled,
            mesh,
            c,
            choice,
            batch=b,
            prompt_len=prompt_len,
            gen_len=gen_len,
            microbatches=microbatches,
        )
        notes += more
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
