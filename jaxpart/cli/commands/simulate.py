"""`jaxpart simulate`: both placements predicted on a GPU pod by the performance model, with the
seed's claims, the physical floor and an optional sweep; `--validate` holds the model against
published measurements."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

from rich.console import Console

from jaxpart.cli import render
from jaxpart.cli.args import (
    check_tp_pp,
    model_and_default,
    model_and_shape,
    plan_choice,
    refuse_beside,
)
from jaxpart.cli.outputs import write_outputs, write_text_atomically
from jaxpart.config import ConfigError, MeshConfig, ModelConfig, RunShape, load_mesh
from jaxpart.config.model import load_model_file
from jaxpart.perf.engines import engine
from jaxpart.perf.predict import constants_from, parse_sweep
from jaxpart.perf.ratios import (
    GROUP_WORDS,
    group_stats,
    ratio_points,
    ratio_words,
    set_stats,
    verdict_band,
)
from jaxpart.perf.simulate import Simulation, at_capacity, run_simulate, run_sweep
from jaxpart.planning.placement import DEFAULT_CHOICE


def run(args, console: Console) -> int:
    if args.validate:
        refuse_beside(
            args,
            "--validate",
            "--validate predicts each published point at its own model, GPUs and shape",
            ("model", "mesh", "sweep", "calibration", "engine", "batch", "prompt_len", "gen_len")
            + ("microbatches", "dtype", "capacity", "strategy", "layers_per_stage", "tp", "pp")
            + ("map", "plot"),
        )
        return _validate(args, console)
    if args.plot and not args.map:
        raise ConfigError(f"--plot = {args.plot}: draws a --map; add --map X=... Y=...")
    if args.map:
        refuse_beside(args, "--map", "--map sweeps its own axes", ("sweep",))
        return _map(args, console)
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    sweep = parse_sweep(args.sweep) if args.sweep else None
    constants = constants_from(mesh, args.calibration)
    choice = plan_choice(args, mesh)
    if not sweep:  # here a baseline that cannot be split is bad input, not a prediction
        check_tp_pp(args, model, mesh)
    profile = engine(args.engine)
    sim = run_simulate(model, mesh, constants, choice, shape, profile)
    if sweep:
        swept = run_sweep(model, mesh, constants, choice, *sweep, shape, profile)
        sim = replace(sim, sweep=swept)
    for line in sim.calibration:
        console.print(f"calibrated: {line}")
    print_prediction(console, sim, mesh, "layerwise / baseline TPS", f"; {sim.why}")
    for line in [*render.verdict_lines(sim), *sim.notes]:
        console.print(f"  {line}")
    for method, plan in sim.plans.items():
        room = sim.capacities[method]
        for line in render.capacity_lines(model, mesh, shape, plan, profile, room):
            console.print(f"  {method}: {line}" if line[0] != " " else f"  {line}")
        full = at_capacity(method, model, plan, constants, shape, room, profile)
        if full is not None:
            run, pred = full
            console.print(
                f"    at batch {run.batch:,}: {pred.tps:,.0f} TPS, TPOT {pred.tpot_ms:.2f} ms "
                f"(predicted: {sim.predicted_by})"
            )
    if sim.sweep:
        sw = sim.sweep
        for row in sw.rows:
            console.print(
                f"  {sw.key} = {row.value:>6}: layerwise / baseline TPS "
                f"{ratio_words(row.ratio)} ({row.layerwise_tps:,.0f} vs "
                f"{row.baseline_tps:,.0f}); {row.why}"
            )
        console.print(f"  {sw.crossover} (predicted)")
        for note in dict.fromkeys(sw.notes):
            console.print(f"  note: {note}")
    if args.json:
        write_text_atomically(args.json, json.dumps(sim.to_dict(), indent=2))
        console.print(f"written to {args.json}")
    return 0


def _map(args, console: Console) -> int:
    """``simulate --map``: the winner of every cell of a grid over two axes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from jaxpart.perf.crossover import AXIS_WORDS, parse_axis, run_map

    x, y = (parse_axis(a) for a in args.map)
    if args.plot:
        from jaxpart.measure.plot import require_matplotlib

        require_matplotlib()
    model, default = model_and_default(args)
    mesh = load_mesh(args.mesh)
    for key, values in (x, y):  # every value checked before any work
        for value in values:
            if key == "mesh":
                load_mesh(value)
            elif key == "model":
                load_model_file(value)

    def resolve(model_name: str | None, mesh_name: str | None):
        m, d = load_model_file(model_name) if model_name else (model, default)
        me = load_mesh(mesh_name) if mesh_name else mesh
        shape = RunShape(
            batch=args.batch or d.batch,
            prompt_len=args.prompt_len or d.prompt_len,
            gen_len=args.gen_len or d.gen_len,
            microbatches=args.microbatches or d.microbatches,
        )
        return m, me, shape, plan_choice(args, me)

    profile = engine(args.engine)
    with Progress(
        TextColumn("map"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("map", total=len(x[1]) * len(y[1]))
        m = run_map(
            resolve, profile, x, y, progress=lambda done, total: bar.update(task, completed=done)
        )
    title = (
        f"{model.name if 'model' not in (x[0], y[0]) else 'each model'} on "
        f"{mesh.name if 'mesh' not in (x[0], y[0]) else 'each mesh'}"
    )
    render.print_table(console, render.map_table(m, title), keep=1)
    lo, hi = m.band
    tp, pp = (f"{v}" if v else "default" for v in (args.tp, args.pp))
    console.print(
        f"each cell: the fastest of the baseline (TP {tp} x PP {pp}), the best "
        f"layer-wise plan and the best TP x PP by predicted TPS, and its margin over the next "
        f"({m.predicted_by}); 'no winner' where the band x{lo:.2f}-x{hi:.2f} (the model's error "
        "on published placement ratios) covers 1"
    )
    for c in m.cells:
        if c.note:
            console.print(f"  {AXIS_WORDS[m.x_key]} {c.x}, {AXIS_WORDS[m.y_key]} {c.y}: {c.note}")
    outputs: dict[str, str | bytes] = {}
    if args.plot:
        from jaxpart.perf.map_plot import plot_map

        outputs[args.plot] = plot_map(m, title)
    if args.json:
        outputs[args.json] = json.dumps(m.to_dict(), indent=2)
    if outputs:
        write_outputs(outputs)
        console.print(f"written to {', '.join(outputs)}")
    return 0


def predict_for(model: ModelConfig, shape: RunShape, mesh: MeshConfig) -> Simulation:
    """The answer for a GPU pod that goes under a measured CPU table: both placements of
    ``model`` on ``mesh`` by the perf model, at ``shape`` (the model file's). ``compare`` makes
    it before measuring, so that targets the perf model cannot predict fail first."""
    return run_simulate(model, mesh, constants_from(mesh), DEFAULT_CHOICE, shape)


def predicted_section(sim: Simulation, mesh: MeshConfig, console) -> None:
    """``predict_for``'s prediction, with the model's error band."""
    print_prediction(console, sim, mesh, f"predicted layerwise / baseline TPS on {mesh.name}")


def print_prediction(console: Console, sim: Simulation, mesh, label: str, why: str = "") -> None:
    """A prediction's table, its layerwise / baseline ratio with the band, and each method that
    could not be planned with the reason."""
    render.print_table(console, render.simulate_table(sim, str(mesh.n_devices)), keep=2)
    if sim.ratio is not None:
        console.print(f"{label}: {ratio_words(sim.ratio)}{why}")
    for method, reason in sim.unplanned.items():
        console.print(f"{method}: not predicted, it cannot be planned for this run: {reason}")


def _validate(args, console: Console) -> int:
    """``simulate --validate``: every published point, predicted beside measured, for the fit
    set and the check set; the error per engine; and the placement ratios with their band."""
    from rich.table import Table

    from jaxpart.perf.validation import check_all, engine_stats, summary

    points = sorted(check_all(), key=lambda p: p.set != "fit")
    table = Table(
        title="The perf model against published measurements (jaxpart/data/published.toml)"
    )
    columns = ("set", "point", "engine", "gpu", "dtype", "TPxPP", "batch", "in/out", "metric")
    for col in (*columns, "measured", "predicted", "pred/meas"):
        table.add_column(col, justify="left" if col in ("point", "metric", "engine") else "right")
    for p in points:
        table.add_row(
            p.set,
            p.id,
            p.engine,
            p.gpu,
            p.dtype,
            f"{p.tp}x{p.pp}",
            str(p.batch),
            f"{p.input_len}/{p.output_len}",
            p.metric,
            f"{p.measured:,.1f}",
            f"{p.predicted:,.1f}",
            f"{p.ratio:.2f}",
        )
    render.print_table(console, table)
    stats = {w: summary(tuple(p for p in points if p.set == w)) for w in ("fit", "check")}
    for which, by_kind in stats.items():
        for kind, st in by_kind.items():
            console.print(
                f"{which} set, {kind}: {st['points']} points, predicted / measured geometric "
                f"mean {st['geomean_ratio']:.2f} (x/ {math.exp(st['log_sd']):.2f} one "
                f"geometric SD), range {st['min_ratio']:.2f}-{st['max_ratio']:.2f}"
            )
    per_engine = engine_stats(tuple(points))
    table = Table(
        title="Per engine: predicted / measured speed (latencies inverted; above 1: optimistic)"
    )
    for col in ("set", "engine", "precision", "points", "geo-mean", "x/ 1 SD", "range"):
        table.add_column(col, justify="left" if col in ("engine", "precision") else "right")
    for e in per_engine:
        table.add_row(
            e.set,
            e.engine,
            e.precision,
            str(e.points),
            f"{e.geomean:.2f}",
            f"{math.exp(e.log_sd):.2f}",
            f"{e.low:.2f}-{e.high:.2f}",
        )
    render.print_table(console, table)
    console.print(
        "constants: each GPU kind's mesh file (meshes/h100x16.toml, a100x8.toml, h200x8.toml) "
        "and each engine's profile (engines.toml), whose fitted costs scripts/fit_constants.py "
        "fitted on the fit set's sources only; the check set's sources were never fitted on"
    )
    _print_ratios(console)
    if args.json:
        doc = {
            "points": [{**asdict(p), "ratio": p.ratio} for p in points],
            "summary": summary(),
            "set_summary": stats,
            "engine_summary": [asdict(e) for e in per_engine],
            "ratio_points": [{**asdict(r), "error": r.error} for r in ratio_points()],
            "ratio_summary": {g: asdict(s) for g, s in group_stats().items()},
            "ratio_set_summary": [asdict(s) for s in set_stats()],
        }
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"written to {args.json}")
    return 0


def _print_ratios(console: Console) -> None:
    """The model against published placement ratios, per kind and set, and the band it earns."""
    from rich.table import Table

    stats = group_stats()
    table = Table(
        title="The perf model against published placement ratios (jaxpart/data/ratios.toml and "
        "published.toml): predicted / measured speed-up of a placement over its reference"
    )
    for col in ("ratio kind", "set", "points", "geo-mean", "range", "band (1 RMS)", "covered"):
        table.add_column(col, justify="left" if col == "ratio kind" else "right")
    for s in set_stats():
        table.add_row(
            GROUP_WORDS[s.group],
            s.set,
            str(s.points),
            f"{s.geomean:.2f}",
            f"{s.low:.2f}-{s.high:.2f}",
            f"x/ {math.exp(s.band_rms):.2f}",
            f"{s.coverage:.0%}",
        )
    render.print_table(console, table)
    every = ratio_points()
    lo, hi, n = verdict_band()
    for which in ("fit", "check", "all"):
        chosen = [r for r in every if which in ("all", r.set)]
        covered = sum(abs(math.log(r.error)) <= stats[r.group].band_rms for r in chosen)
        console.print(
            f"band coverage, {which} set{'s' if which == 'all' else ''}: "
            f"{covered / len(chosen):.0%} of {len(chosen)} placement ratios lie within one RMS "
            "error of their kind (about 68% is expected of a one-SD band)"
        )
    console.print(
        f"a layer-wise / baseline ratio carries {GROUP_WORDS['tp_within_node']} and "
        f"{GROUP_WORDS['pp_against_tp']}: its band is x{lo:.2f}-x{hi:.2f} ({n} points): each "
        "kind's RMS error, the larger of its fit set's and its check set's, added in quadrature"
    )
