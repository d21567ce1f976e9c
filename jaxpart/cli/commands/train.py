"""`jaxpart train`: train a small model on a synthetic task (optax), with checkpoints."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from jaxpart.config import ConfigError, load_model


def _check_checkpoint_folder(folder: str) -> None:
    """Before training: the folder may not hold a model's weights (a Hugging Face folder), and
    must be writable (the folder, or the one it will be made in)."""
    path = Path(folder)
    weights = [
        name
        for name in ("config.json", "model.safetensors", "model.safetensors.index.json")
        if (path / name).exists()
    ]
    if weights:
        raise ConfigError(
            f"--checkpoint = {folder!r}: it holds a model ({weights[0]}); checkpoints go in a "
            "folder of their own"
        )
    where = path if path.exists() else path.parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"--checkpoint = {folder!r}: {str(where)!r} cannot be written")


def run(args, console: Console) -> int:
    model = load_model(args.model)  # a bad name fails before jax starts
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxpart.io import checkpoint
    from jaxpart.train.loop import TrainConfig, evaluate, train

    given = {k: getattr(args, k) for k in ("steps", "batch", "lr", "every")}
    tc = TrainConfig(
        task=args.task, seed=args.seed, **{k: v for k, v in given.items() if v is not None}
    )
    if args.checkpoint:
        _check_checkpoint_folder(args.checkpoint)
    if args.checkpoint and checkpoint.latest_step(args.checkpoint) is not None:
        step, meta = checkpoint.read_meta(args.checkpoint, model)  # a wrong model fails here
        saved = meta.get("task")
        if saved is not None and saved != args.task:
            raise ConfigError(
                f"--task = {args.task!r}: the checkpoint in {args.checkpoint} was trained on "
                f"{saved!r} (step {step}); resume with --task {saved}, or give a new folder"
            )
        console.print(f"resuming from step {step} in {args.checkpoint}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  exact {task.fields[exact]:.1%}"),
        TimeElapsedColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console) if console.is_terminal else nullcontext() as bar:
        job = bar and bar.add_task(
            f"training {model.name} on {args.task}", total=tc.steps, loss=0.0, exact=0.0
        )

        def on_step(step, metrics):
            loss, exact = float(metrics["loss"]), float(metrics["exact"])
            if bar is not None and (step % 10 == 0 or step == tc.steps):
                bar.update(job, completed=step, loss=loss, exact=exact)
            elif bar is None and (step % 50 == 0 or step == tc.steps):  # a pipe: plain lines
                console.print(
                    f"step {step}/{tc.steps}: loss {loss:.4f}, exact {exact:.1%} "
                    f"({time.perf_counter() - started:.0f} s)"
                )

        params, metrics, start = train(model, tc, args.checkpoint, on_step)
        if bar is not None:
            bar.update(job, completed=tc.steps)
    if start >= tc.steps:
        console.print(f"nothing to do: the checkpoint is at step {start} >= --steps {tc.steps}")
    accuracy = evaluate(model, params, args.task, seed=args.seed)
    console.print(
        f"{args.task}: {accuracy:.1%} exact answers by greedy generation on 256 fresh prompts "
        f"(measured on one CPU device); last training batch: loss {metrics.get('loss', 0):.4f}"
    )
    if args.checkpoint:
        console.print(f"checkpoint: {args.checkpoint} (step {tc.steps})")
    return 0
