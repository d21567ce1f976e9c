"""The performance model against published GPU measurements (jaxpart/data/published.toml)."""

import json
import math
import tomllib

from jaxpart.cli import main
from jaxpart.perf.ratios import DATA as RATIOS
from jaxpart.perf.ratios import REFERENCES, VERDICT_GROUPS, group_stats, ratio_points, verdict_band
from jaxpart.perf.validation import DATA, MESHES, check_all, summary

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
    groups = {r.group for r in points}
    assert groups == set(REFERENCES)
    doc = tomllib.loads(RATIOS.read_text())
    by_id = {p["id"]: p for p in doc["point"]}
    for r in points:
        p, ref = by_id[r.id], by_id[r.reference]
        # same model, batch and lengths; the reference placement of the point's group
        same = ("arch", "batch", "input_len", "output_len")
        assert all(p[k] == ref[k] for k in same), r.id
        assert (ref["tp"], ref["pp"]) == REFERENCES[r.group] and not p.get("ambiguous")
        assert math.isclose(r.measured, ref["value"] / p["value"])


def test_the_verdict_band_comes_from_the_ratio_errors_it_carries():
    stats = group_stats()
    lo, hi, n = verdict_band()
    rms = math.sqrt(sum(stats[g].log_rms ** 2 for g in VERDICT_GROUPS))
    assert math.isclose(math.log(hi), rms) and math.isclose(lo * hi, 1.0)
    assert n == sum(stats[g].points for g in VERDICT_GROUPS) >= 100
    # One RMS either side covers about two thirds of the points it was measured on.
    every = ratio_points()
    covered = sum(abs(math.log(r.error)) <= stats[r.group].log_rms for r in every)
    assert 0.55 <= covered / len(every) <= 0.80
    # Cross-node tensor parallelism, hierarchical over every NIC: within the model's error.
    assert 0.85 <= stats["tp_across_nodes"].geomean <= 1.18


def test_simulate_validate_prints_every_point(capsys, tmp_path):
    path = tmp_path / "v.json"
    assert main(["simulate", "--validate", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "geometric mean" in out and "throughput:" in out and "latency:" in out
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
        [sys.executable, str(script), "--gpu", "h200", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in ("before fit", "before check", "after  fit", "h200: launch_s"):
        assert line in out, out
