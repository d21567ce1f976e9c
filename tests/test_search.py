"""`plan --auto` / `jaxpart.search_plans` against exhaustive evaluation of every placement."""

import dataclasses
import itertools
import json

import pytest

from jaxpart.cli import main
from jaxpart.config import ConfigError, FitDefinition, RunShape, default_run, load_mesh, load_model
from jaxpart.perf.predict import constants_from, predict
from jaxpart.perf.search import _divisors, _fits, best_of_each, search_plans
from jaxpart.planning.memory import device_memory, layer_fit_bytes, valid_splits
from jaxpart.planning.plan import assemble_plan


def _compositions(n_layers, n_stages):
    for cuts in itertools.combinations(range(1, n_layers), n_stages - 1):
        ends = (0, *cuts, n_layers)
        yield [list(range(ends[i], ends[i + 1])) for i in range(n_stages)]


def _exhaustive(cfg, run, mesh, objective):
    """Every contiguous partition at every split and replica count that uses the mesh, at every
    microbatch count: the best cost by the same models."""
    c, n, L = constants_from(mesh), mesh.n_devices, cfg.n_layers
    hbm = mesh.tiers["hbm"].capacity_bytes
    best = None
    for t in valid_splits(cfg):
        for S in range(1, L + 1):
            if n % (t * S) or run.batch % (n // (t * S)):
                continue
            r = n // (t * S)
            layer_bytes = [layer_fit_bytes(cfg, run, FitDefinition.EVERYTHING, t)] * L
            for stages in _compositions(L, S):
                plan = assemble_plan(
                    cfg, mesh, run, stages, t, r, "x", "derived", FitDefinition.EVERYTHING, "hbm",
                    hbm, layer_bytes, [],
                )  # fmt: skip
                per = run.batch // r
                for m in _divisors(per):
                    if _fits(cfg, mesh, plan, per // m, per, run.prompt_len) is None:
                        continue
                    p = predict("x", cfg, plan, c, run.replace(microbatches=m))
                    cost = {"throughput": -p.tps, "tpot": p.tpot_ms, "ttft": p.ttft_ms}[objective]
                    best = cost if best is None else min(best, cost)
    return best


def _small_hbm(mesh, capacity):
    tiers = dict(mesh.tiers)
    tiers["hbm"] = dataclasses.replace(tiers["hbm"], capacity_bytes=capacity)
    tiers["l2"] = dataclasses.replace(tiers["l2"], capacity_bytes=capacity // 4)
    tiers["smem"] = dataclasses.replace(tiers["smem"], capacity_bytes=capacity // 16)
    return dataclasses.replace(mesh, tiers=tiers)


@pytest.mark.parametrize(
    "model, layers, devices, hbm_share",
    [
        ("dense16-tiny", 6, 4, None),  # all fits one device: replicas or a tensor split win
        ("dense16-tiny", 8, 8, 0.3),  # HBM for under a third of the model: pipelines needed
        ("dense16-tiny", 8, 8, 0.15),
        ("gqa-tiny", 7, 4, 0.4),  # 7 layers on 4 devices: unequal stages
    ],
)
@pytest.mark.parametrize("objective", ["throughput", "tpot", "ttft"])
def test_the_best_plan_found_is_the_best_of_all(model, layers, devices, hbm_share, objective):
    cfg, run = load_model(model).replace(n_layers=layers), default_run(model)
    mesh = load_mesh("h100x16").sized(devices)
    if hbm_share:
        whole = device_memory(
            cfg, layers, 1, cache_rows=run.batch, rows=run.batch, prompt_len=run.prompt_len
        ).total
        mesh = _small_hbm(mesh, int(whole * hbm_share))
    ranked = search_plans(cfg, mesh, run, objective=objective)
    best = _exhaustive(cfg, run, mesh, objective)
    assert ranked[0].cost(objective) == pytest.approx(best, rel=1e-12)
    costs = [k.cost(objective) for k in ranked]
    assert costs == sorted(costs)
    hbm = mesh.tiers["hbm"].capacity_bytes
    assert all(k.memory_bytes <= hbm for k in ranked)


def test_plan_auto_prints_and_writes_the_ten_best(capsys, tmp_path):
    path = tmp_path / "auto.json"
    args = ["plan", "--auto", "--model", "llama3.1-70b", "--mesh", "h100x16"]
    assert main([*args, "--objective", "tpot", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "The 10 best of" in out and "#10:" in out and "largest parts" in out
    doc = json.loads(path.read_text())
    assert doc["objective"] == "tpot" and len(doc["top"]) == 10
    tpots = [k["prediction"]["tpot_ms"] for k in doc["top"]]
    assert tpots == sorted(tpots)
    for k in doc["top"]:
        assert k["memory_bytes_per_device"] <= 80e9 and k["deciding_terms"]


def test_search_names_both_methods_and_refuses_what_cannot_fit():
    cfg, mesh, run = load_model("dense16-l2"), load_mesh("h100x16"), default_run("dense16-l2")
    best = best_of_each(search_plans(cfg, mesh, run))
    assert set(best) == {"baseline", "layerwise"}
    with pytest.raises(ConfigError, match="--objective"):
        search_plans(cfg, mesh, run, objective="speed")
    big = load_model("llama3.1-405b")
    with pytest.raises(ConfigError, match="sequences fit"):  # the pod's floor, before any plan
        search_plans(big, _small_hbm(mesh, 10**9), default_run("llama3.1-405b"))
    with pytest.raises(ConfigError, match="no placement of llama3.1-405b .* fits"):
        search_plans(big, _small_hbm(mesh, 55 * 10**9), RunShape(1, 8, 8))


def test_compare_auto_runs_the_best_plan_of_each_method(capsys):
    args = ["compare", "--auto", "--batch", "8", "--prompt-len", "8", "--gen-len", "3"]
    assert main([*args, "--repeats", "1", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "--auto: baseline:" in out and "--auto: layerwise:" in out
