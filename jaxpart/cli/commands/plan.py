"""`jaxpart plan`: partition a model's layers onto a mesh and print the plan; `--auto` searches
every placement and prints the ten best that fit."""

from __future__ import annotations

import json

from rich.console import Console

from jaxpart.cli import render
from jaxpart.cli.args import model_and_shape, refuse_beside
from jaxpart.cli.outputs import write_text_atomically
from jaxpart.config import ConfigError, load_mesh
from jaxpart.perf.search import search_plans
from jaxpart.planning.plan import make_plan


def run(args, console: Console) -> int:
    if args.auto:
        refuse_beside(
            args,
            "--auto",
            "--auto searches every placement itself",
            ("capacity", "strategy", "layers_per_stage", "devices", "figures"),
        )
        return _auto(args, console)
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
    render.print_plan(console, model, mesh, shape, plan)
    if args.json:
        write_text_atomically(args.json, plan.to_json())
        console.print(f"plan written to {args.json}")
    return 0


def _auto(args, console: Console) -> int:
    """``plan --auto``: the ten best placements that fit, and what decides between them."""
    model, shape = model_and_shape(args)
    mesh = load_mesh(args.mesh)
    ranked = search_plans(model, mesh, shape, objective=args.objective)
    top = ranked[:10]
    render.print_table(
        console, render.search_table(top, model, mesh, shape, args.objective, len(ranked)), keep=2
    )
    console.print("a decode tick's largest parts, in us (predicted):")
    for line in render.search_terms(top):
        console.print(f"  {line}")
    if args.json:
        doc = {
            "model": model.name,
            "mesh": mesh.name,
            "batch": shape.batch,
            "prompt_len": shape.prompt_len,
            "gen_len": shape.gen_len,
            "objective": args.objective,
            "predicted_by": f"perf model, meshes/{mesh.name}.toml",
            "candidates_fitting": len(ranked),
            "top": [k.to_dict() for k in top],
        }
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"written to {args.json}")
    return 0
