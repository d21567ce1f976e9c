"""`jaxpart plan`: partition a model's layers onto a mesh and print the plan; `--auto` searches
every placement and prints the ten best that fit; `--export` prints a plan as a serving engine's
settings."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from jaxpart.cli import render
from jaxpart.cli.args import model_and_shape, refuse_beside
from jaxpart.cli.outputs import write_text_atomically
from jaxpart.config import ConfigError, MeshConfig, load_mesh
from jaxpart.perf.engines import Engine, engine
from jaxpart.perf.search import search_plans
from jaxpart.planning.capacity import plan_capacity
from jaxpart.planning.export import export_plan
from jaxpart.planning.plan import Plan, make_plan


def run(args, console: Console) -> int:
    profile = _profile(args)
    if args.auto:
        refuse_beside(
            args,
            "--auto",
            "--auto searches every placement itself",
            ("capacity", "strategy", "layers_per_stage", "devices", "figures"),
        )
        return _auto(args, console, profile)
    if args.objective != "throughput":
        raise ConfigError(f"--objective = {args.objective}: ranks --auto's placements; add --auto")
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    if args.devices is not None and args.devices > mesh.n_devices:
        raise ConfigError(
            f"--devices = {args.devices}: --mesh {mesh.name} has {mesh.n_devices} devices; "
            "plan for at most that many (or give a larger mesh file)"
        )
    plan = make_plan(
        model,
        mesh,
        shape,
        capacity=args.capacity,
        strategy=args.strategy,
        devices=args.devices,
        figures=args.figures,
        layers_per_stage=args.layers_per_stage,
    )
    lines = render.capacity_lines(model, mesh, shape, plan, profile)
    export = _export(
        args, plan, mesh, profile, f"planned by the memory model, meshes/{mesh.name}.toml"
    )
    render.print_plan(console, model, mesh, shape, plan)
    for line in lines:
        console.print(line)
    if export is not None:
        console.print(export.text(), markup=False, highlight=False)
    if args.json:
        doc = plan.to_dict() | {"max_batch": _capacity(model, mesh, shape, plan, profile)}
        if export is not None:
            doc["export"] = export.to_dict()
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"plan written to {args.json}")
    return 0


def _profile(args) -> Engine:
    """The profile to predict with: --engine, else --export's engine, else jaxpart's own."""
    if args.engine and args.export and args.engine != args.export:
        raise ConfigError(
            f"--engine = {args.engine} and --export = {args.export}: the export is predicted "
            "with its own engine's profile; give one of them"
        )
    return engine(args.engine or args.export or "jaxpart")


def _model_ref(args) -> str:
    """What the engine's command loads: the --model folder, else a placeholder."""
    return str(Path(args.model).resolve()) if Path(args.model).is_dir() else "$MODEL"


def _export(args, plan: Plan, mesh: MeshConfig, profile: Engine, chosen_by: str):
    if args.export is None:
        return None
    return export_plan(plan, mesh, args.export, profile.memory, _model_ref(args), chosen_by)


def _capacity(model, mesh, shape, plan: Plan, profile: Engine) -> dict:
    room = plan_capacity(model, mesh, plan, shape, profile.memory)
    return room.to_dict() | {"predicted_by": render.capacity_source(mesh, profile)}


def _auto(args, console: Console, profile: Engine) -> int:
    """``plan --auto``: the ten best placements that fit, and what decides between them."""
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    ranked = search_plans(model, mesh, shape, objective=args.objective, engine=profile)
    top = ranked[:10]
    best = top[0]
    chosen = (
        f"the best by predicted {args.objective}: perf model, meshes/{mesh.name}.toml, engine "
        f"{profile.name}"
    )
    export = _export(args, best.plan, mesh, profile, chosen)
    render.print_table(
        console,
        render.search_table(top, model, mesh, shape, args.objective, len(ranked), profile.name),
        keep=2,
    )
    console.print("a decode tick's largest parts, in us (predicted):")
    for line in render.search_terms(top):
        console.print(f"  {line}")
    console.print(f"#1, {best.method}: {best.how}")
    for line in render.capacity_lines(model, mesh, best.shape, best.plan, profile):
        console.print(f"  {line}")
    piped = next((k for k in top if k.plan.n_stages > 1), None)
    if best.plan.n_stages == 1 and piped is not None:  # the best pipeline's split, too
        plan = piped.plan
        gain = render.split_gain(
            model, mesh, piped.shape, plan.n_stages, plan.split, plan.data_parallel, profile
        )
        console.print(f"  the best pipeline, {piped.method}: {piped.how}: {gain}")
    if export is not None:
        console.print(export.text(), markup=False, highlight=False)
    if args.json:
        doc = {
            "model": model.name,
            "mesh": mesh.name,
            "batch": shape.batch,
            "prompt_len": shape.prompt_len,
            "gen_len": shape.gen_len,
            "objective": args.objective,
            "engine": profile.name,
            "predicted_by": f"perf model, meshes/{mesh.name}.toml, engine {profile.name}",
            "candidates_fitting": len(ranked),
            "top": [k.to_dict() for k in top],
        }
        if export is not None:
            doc["export"] = export.to_dict()
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"written to {args.json}")
    return 0
