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
from jaxpart.config import ConfigError, MeshConfig, ModelConfig, RunShape, load_mesh
from jaxpart.perf.engines import Engine, engine
from jaxpart.perf.search import search_plans
from jaxpart.planning.capacity import balanced_split, capacity
from jaxpart.planning.export import ENGINE_NAMES, default_split, export_plan
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
    lines = capacity_lines(model, mesh, shape, plan, profile)
    export = _export(args, plan, mesh, profile)
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


def _export(args, plan: Plan, mesh: MeshConfig, profile: Engine):
    if args.export is None:
        return None
    return export_plan(plan, mesh, args.export, profile.memory, _model_ref(args))


def _capacity(model, mesh, shape, plan: Plan, profile: Engine) -> dict:
    room = capacity(
        model, mesh, plan.layers_per_stage, plan.split, plan.data_parallel, shape, profile.memory
    )
    return room.to_dict() | {"predicted_by": _source(mesh, profile)}


def _source(mesh: MeshConfig, profile: Engine) -> str:
    return f"memory model, meshes/{mesh.name}.toml, engine {profile.name}"


def capacity_lines(
    model: ModelConfig, mesh: MeshConfig, shape: RunShape, plan: Plan, profile: Engine
) -> list[str]:
    """The largest batch the plan holds at the run's context, its tightest stage, and, for a
    pipeline, what the split that gives that stage the most room would hold against the
    engine's default split."""
    room = capacity(
        model, mesh, plan.layers_per_stage, plan.split, plan.data_parallel, shape, profile.memory
    )
    limit = room.limiting_stage
    out = [
        f"max batch: {room.batch:,} sequences at a context of {room.positions:,} "
        f"({room.per_replica:,} a replica, x{room.replicas}; stage {limit} with "
        f"{room.stages[limit].layers} layers is the tightest) (predicted: "
        f"{_source(mesh, profile)})"
    ]
    if plan.n_stages > 1:
        out.append(
            "  "
            + split_gain(model, mesh, shape, plan.n_stages, plan.split, plan.data_parallel, profile)
        )
    return out


def split_gain(model, mesh, shape, stages: int, split: int, replicas: int, profile: Engine) -> str:
    """The balanced split's max batch against the engine's default split's."""
    balanced = balanced_split(model, mesh, stages, split, shape, profile.memory)
    name = profile.name if profile.name in ENGINE_NAMES else "trtllm"
    default = default_split(name, model.n_layers, stages)
    words = ENGINE_NAMES.get(profile.name, f"{profile.name}'s (as TensorRT-LLM's)")
    a = capacity(model, mesh, balanced, split, replicas, shape, profile.memory).batch
    b = capacity(model, mesh, default, split, replicas, shape, profile.memory).batch
    gain = f"{(a / b - 1) * 100:+.1f}%" if b else "the default holds none"
    return (
        f"balanced split {','.join(map(str, balanced))} holds {a:,}; {words} default split "
        f"{','.join(map(str, default))} holds {b:,} ({gain})"
    )


def _auto(args, console: Console, profile: Engine) -> int:
    """``plan --auto``: the ten best placements that fit, and what decides between them."""
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    ranked = search_plans(model, mesh, shape, objective=args.objective, engine=profile)
    top = ranked[:10]
    best = top[0]
    export = _export(args, best.plan, mesh, profile)
    render.print_table(
        console,
        render.search_table(top, model, mesh, shape, args.objective, len(ranked), profile.name),
        keep=2,
    )
    console.print("a decode tick's largest parts, in us (predicted):")
    for line in render.search_terms(top):
        console.print(f"  {line}")
    console.print(f"#1, {best.method}: {best.how}")
    for line in capacity_lines(model, mesh, best.shape, best.plan, profile):
        console.print(f"  {line}")
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
