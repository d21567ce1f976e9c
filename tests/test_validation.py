"""The performance model against published GPU measurements (jaxpart/data/published.toml)."""

import json
import math
import tomllib

from jaxpart.cli import main
from jaxpart.perf.ratios import DATA as RATIOS
from jaxpart.perf.ratios import (
    REFERENCES,
    VERDICT_GROUPS,
    band_rms,
    group_stats,
    ratio_points,
    set_stats,
    verdict_band,
)
from jaxpart.perf.validation import DATA, MESHES, check_all, engine_stats, summary

REQUIRED = (
    "id source model arch gpu dtype tp pp batch input_len output_len metric kind timed value"
).split()


def test_the_data_has_twenty_points_from_three_sources_on_two_gpu_kinds():
    doc = tomllib.loads(DATA.read_text())
    points = doc["point"]
    assert len(points) >= 20
    for p in points:
        missing = [k for k in REQUIRED if k not in p]
        assert not missing, (p.get("id"), missing)
        assert p["source"].startswith("https://"), p["id"]
        assert p["arch"] in doc["arch"] and p["gpu"] in MESHES
    hosts = {p["source"].split("/")[2] + "/" + p["source"].split("/")[3] for p in points}
    assert len(hosts) >= 3
    assert len({p["gpu"] for p in points}) >= 2
    assert len({p["id"] for p in points}) == len(points)


def test_predictions_hold_up_against_the_published_measurements():
    # One set of constants per GPU kind (the mesh files' timing tables), none per point.
    stats = summary()
    for kind in ("throughput", "latency"):
        assert stats[kind]["points"] >= 10, kind
        assert 0.87 <= stats[kind]["geomean_ratio"] <= 1.15, (kind, stats[kind])
    for p in check_all():
        assert 0.5 <= p.ratio <= 2.0, (p.id, p.measured, p.predicted)


def test_ratio_points_pair_each_placement_with_its_reference():
    points = ratio_points()
    assert {r.group for r in points} == set(REFERENCES)
    doc = tomllib.loads(RATIOS.read_text())
    by_id = {p["id"]: p for p in doc["point"]}
    published = {p["id"]: p for p in tomllib.loads(DATA.read_text())["point"]}
    same = ("arch", "batch", "input_len", "output_len")  # same model, batch and lengths
    for r in points:
        if r.id in by_id:  # ratios.toml: the reference placement of the point's group
            p, ref = by_id[r.id], by_id[r.reference]
            assert (ref["tp"], ref["pp"]) == REFERENCES[r.group] and not p.get("ambiguous")
            assert math.isclose(r.measured, ref["value"] / p["value"])  # times
        else:  # a published family: one source and engine, the smallest TP as reference
            p, ref = published[r.id], published[r.reference]
            keys = ("source", "engine", "gpu", "dtype", "metric")
            assert all(p[k] == ref[k] for k in keys) and p["pp"] == ref["pp"] == 1
            assert r.group == "tp_within_node" and ref["tp"] < p["tp"] <= 8
            assert math.isclose(r.measured, p["value"] / ref["value"])  # throughputs
        assert all(p[k] == ref[k] for k in same), r.id


def test_fit_and_check_sets_are_split_by_source():
    doc = tomllib.loads(DATA.read_text())
    fit = set(doc["fit_sources"])
    assert fit <= {p["source"] for p in doc["point"]}  # each names a source that is used
    for p in check_all():
        source = next(q["source"] for q in doc["point"] if q["id"] == p.id)
        assert p.set == ("fit" if source in fit else "check"), p.id
    sets = {(r.set, r.engine) for r in ratio_points()}
    assert ("fit", "fastertransformer") in sets and ("check", "gptfast") in sets


def test_the_check_set_holds_up_per_engine_and_precision():
    # The points whose sources the fitted costs never saw, per engine and precision.
    checked = [e for e in engine_stats() if e.set == "check"]
    assert {(e.engine, e.precision) for e in checked} >= {
        ("vllm", "16-bit"),
        ("trtllm", "fp8"),
        ("fastertransformer", "16-bit"),
        ("gptfast", "16-bit"),
    }
    for e in checked:
        assert 0.85 <= e.geomean <= 1.18, e


def test_tensor_parallel_speedups_inside_and_across_nodes():
    within = [r.error for r in ratio_points() if r.group == "tp_within_node"]
    geomean = math.exp(sum(map(math.log, within)) / len(within))
    assert 0.9 <= geomean <= 1.1 and all(1 / 1.5 <= e <= 1.5 for e in within)
    assert 0.85 <= group_stats()["tp_across_nodes"].geomean <= 1.18


def test_the_verdict_band_comes_from_the_ratio_errors_it_carries():
    stats = group_stats()
    lo, hi, n = verdict_band()
    rms = math.sqrt(sum(band_rms(g) ** 2 for g in VERDICT_GROUPS))
    assert math.isclose(math.log(hi), rms) and math.isclose(lo * hi, 1.0)
    assert n == sum(stats[g].points for g in VERDICT_GROUPS) >= 100
    for g in REFERENCES:  # a kind's band: the larger of its sets' RMS errors
        per_set = [s.log_rms for s in set_stats() if s.group == g]
        assert math.isclose(stats[g].band_rms, max(per_set))
    # On the points it was not fitted on, one band either side covers about two thirds.
    check = [r for r in ratio_points() if r.set == "check"]
    covered = sum(abs(math.log(r.error)) <= stats[r.group].band_rms for r in check)
    assert 0.55 <= covered / len(check) <= 0.80


def test_simulate_validate_prints_every_point(capsys, tmp_path):
    path = tmp_path / "v.json"
    assert main(["simulate", "--validate", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    for words in ("fit set, throughput:", "check set, latency:", "Per engine", "band coverage"):
        assert words in out, words
    doc = json.loads(path.read_text())
    assert len(doc["points"]) == len(check_all())
    assert doc["summary"]["throughput"]["geomean_ratio"] == summary()["throughput"]["geomean_ratio"]


def test_the_fitting_script_reports_its_fit_and_check_sets():
    # The script behind fitted constants: its fit and check sets are split by source, and it
    # reports both, before and after (one round here: it runs, it does not converge).
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "fit_constants.py"
    out = subprocess.run(
        [sys.executable, str(script), "--engine", "gptfast", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in ("before fit", "before check", "after  fit", "after  check", "gptfast: kernel_us"):
        assert line in out, out
