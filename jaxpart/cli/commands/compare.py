"""`jaxpart compare`, the main job: the reference, the TP x PP baseline and the layer-wise plan on
the same weights and prompts, measured side by side, then the performance model's answer for a
GPU pod."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import replace

from rich.console import Console

from jaxpart.cli import render
from jaxpart.cli.args import check_tp_pp, refuse_beside, run_inputs
from jaxpart.cli.commands.simulate import predict_for, predicted_section
from jaxpart.cli.outputs import write_outputs
from jaxpart.config import ConfigError, load_mesh
from jaxpart.config.model import load_model_file


def run(args, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.plot:
        from jaxpart.measure.plot import require_matplotlib

        require_matplotlib()
    if args.auto:
        refuse_beside(
            args,
            "--auto",
            "--auto chooses both placements itself",
            ("capacity", "strategy", "layers_per_stage", "tp", "pp"),
        )
    predict_model, predict_shape = load_model_file(args.predict_for[0])
    predict_mesh = load_mesh(args.predict_for[1])
    try:  # before the work: a target the perf model cannot predict fails first
        predicted = predict_for(predict_model, predict_shape, predict_mesh)
    except ConfigError as e:
        raise ConfigError(f"--predict-for = {' '.join(args.predict_for)}: {e}") from None
    model, mesh, shape, prompts, choice, kernel = run_inputs(args, console)
    if shape.gen_len < 2:
        raise ConfigError(
            f"--gen-len = {shape.gen_len}: compare needs >= 2 new tokens to time decoding"
        )
    if args.auto:
        choice = _auto_choice(model, mesh, shape, choice, console)
    else:
        check_tp_pp(args, model, mesh)
    from jaxpart.measure.compare import ratio_line, run_compare
    from jaxpart.runtime.engine import describe_weights

    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    terminal = console.is_terminal
    with Progress(*columns, console=console, transient=True) if terminal else nullcontext() as bar:
        tasks = {}
        started = time.perf_counter()

        def progress(method, what):
            if bar is None:  # a pipe or a file: one plain line as each step ends
                console.print(f"{method}: {what} ({time.perf_counter() - started:.1f} s)")
                return
            if method not in tasks:
                tasks[method] = bar.add_task(f"{method}: compiling", total=args.repeats + 2)
            bar.update(
                tasks[method],
                advance=1,
                description=f"{method}: {'timing' if what != 'placed' else 'compiling'}",
            )

        result = run_compare(
            model,
            mesh,
            shape,
            choice=choice,
            kernel=kernel,
            repeats=args.repeats,
            seed=args.seed,
            progress=progress,
            checkpoint=args.checkpoint,
            prompts=prompts.rows,
        )
    layerwise = result.plans["layerwise"]
    weights = describe_weights(model, args.seed, args.checkpoint)
    console.print(f"weights: {weights}; prompts: {prompts.described}")
    console.print(render.plan_summary(layerwise))
    render.print_table(console, render.plan_table(layerwise, mesh))
    console.print(render.plan_summary(result.plans["baseline"]))
    if result.reference_skipped:
        console.print(result.reference_skipped)
    render.print_table(console, render.results_table(result), keep=2)
    console.print(render.spread_line(result))
    console.print(ratio_line(result))
    for a in result.agreements:
        unit = " logit spreads" if a.relative else ""
        what = "quantisation" if a.relative else "rounding"
        console.print(
            f"  {a.method} vs {result.anchor}, teacher-forced ({a.dtype}): chooses the same token "
            f"at {a.agreement:.1%} of steps; max |dlogit| {a.max_logit_delta:.4f}{unit}; "
            f"{a.faults} choice(s) differ by more than the {what} tolerance {a.tolerance}{unit}"
            + (f" (worst gap {a.worst_gap:.3f})" if a.faults else "")
        )
    for line in render.breakdown_lines(result):
        console.print(f"  {line}")
    if mesh.platform == "cpu":
        console.print(
            "  caveat: simulated CPU devices share the host's cores and caches, so these ratios "
            "say nothing yet about GPUs"
        )
    console.print(f"  {render.SEED_CLAIM}")
    predicted_section(predicted, predict_mesh, console)
    if not result.all_agree:
        what = "its tokens" if not result.agreements else "beyond rounding"
        console.print(f"[bold red]a placement disagrees with the {result.anchor} ({what})[/]")
    outputs: dict[str, str | bytes] = {}
    if args.json:
        doc = {**result.to_dict(), "weights": weights, "prompts": prompts.described}
        outputs[args.json] = json.dumps(doc, indent=2)
    if args.plot:
        from jaxpart.measure.plot import plot_comparison

        outputs[args.plot] = plot_comparison(result)
    write_outputs(outputs)
    for path in outputs:
        console.print(f"written to {path}")
    return 0 if result.all_agree else 1


def _auto_choice(model, mesh, shape, choice, console: Console):
    """``compare --auto``: the best layer-wise and the best TP x PP plan of ``plan --auto``."""
    from jaxpart.perf.search import best_of_each, search_plans

    best = best_of_each(search_plans(model, mesh, shape))
    if "layerwise" not in best:
        raise ConfigError(f"--auto: no layer-wise plan of {model.name} fits {mesh.name}'s HBM")
    for method in ("baseline", "layerwise"):
        k = best[method]
        console.print(
            f"--auto: {method}: {k.how}, {k.plan.n_stages} stage(s) x split {k.plan.split} x "
            f"{k.plan.data_parallel} replica(s), {k.microbatches} microbatch(es); predicted "
            f"{k.prediction.tps:,.0f} TPS on {mesh.name} (perf model)"
        )
    found = tuple((m, best[m].plan, best[m].microbatches) for m in ("baseline", "layerwise"))
    return replace(choice, found=found)
