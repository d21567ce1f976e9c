"""`jaxpart generate`: generate (greedy or sampled) by one method on the mesh, streaming tokens
on a terminal."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict

from rich.console import Console

from jaxpart.cli import render
from jaxpart.cli.args import check_tp_pp, run_inputs
from jaxpart.cli.outputs import write_text_atomically
from jaxpart.cli.prompts import Prompts, generation_config
from jaxpart.config import format_bytes


def run(args, console: Console) -> int:
    model, mesh, shape, prompts, choice, kernel = run_inputs(args, console)
    generation = generation_config(args, model, prompts.tokenizer)
    if args.method == "baseline":
        check_tp_pp(args, model, mesh)
    from jaxpart.runtime.engine import describe_weights, generate

    shown = min(args.show or shape.batch, shape.batch)
    streamed: list[list[int]] = [[] for _ in range(shown)]
    live, on_tokens = None, None
    if console.is_terminal:  # a spinner while compiling, then tokens as each call returns them
        from rich.console import Group
        from rich.live import Live
        from rich.spinner import Spinner

        spinner = Spinner("dots", text=f"compiling and running {args.method} on {mesh.name}")
        live = Live(spinner, console=console, transient=True, refresh_per_second=8)

        def on_tokens(new):
            for i in range(shown):
                streamed[i].extend(int(t) for t in new[i])
            lines = [_line(prompts, i, streamed[i]) for i in range(shown)]
            spinner.update(text=f"generating: new tokens so far, per sequence: {len(streamed[0])}")
            live.update(Group(spinner, "\n".join(lines)))

    with live if live is not None else nullcontext():
        result = generate(
            args.method,
            model,
            mesh,
            shape,
            seed=args.seed,
            prompts=prompts.rows,
            choice=choice,
            kernel=kernel,
            checkpoint=args.checkpoint,
            generation=generation,
            on_tokens=on_tokens,
        )
    tokens, _, executor = result
    lengths = result.lengths
    plan = executor.plan
    console.print(f"method: {args.method} ({model.name}, {render.precision(model)})")
    if plan is not None:
        console.print(render.plan_summary(plan))
        for note in plan.notes:
            if note.startswith("replicas:"):
                console.print(note)
        console.print(
            f"schedule: {executor.shape.microbatches} microbatches over {plan.n_stages} stages; "
            f"padding (idle share of stage-layer slots): {executor.padding_fraction:.0%}"
        )
    console.print(
        f"weights: {describe_weights(model, args.seed, args.checkpoint)}; prompts: "
        f"{prompts.described}"
    )
    console.print(f"generation: {render.describe_generation(generation, result.generation)}")
    read, checkpoint_bytes = _weights_read(executor)
    if read is not None:
        console.print(
            f"read from the checkpoint, per process: "
            f"{', '.join(format_bytes(b) for b in read)} of {format_bytes(checkpoint_bytes)}"
        )
    for note in executor.weight_notes:
        console.print(note)
    held = executor.weights_held
    console.print(
        f"weights held on the devices (every shard's bytes, copies included): "
        f"{format_bytes(sum(held.values()))}: the layers' matrices {format_bytes(held['matrices'])}"
        + (f", their FP8 scales {format_bytes(held['scales'])}" if held["scales"] else "")
        + f", embedding, head and norms {format_bytes(held['rest'])}"
    )
    accuracy = None
    task = prompts.task
    for i in range(shown):
        line = _line(prompts, i, tokens[i, : lengths[i]].tolist())
        if task:
            ok = (tokens[i, : task.answer_len] == prompts.answers[i]).all()
            line += f"  {'ok' if ok else 'WRONG, expected ' + task.render(prompts.answers[i])}"
        console.print(line)
    if tokens.shape[0] > shown:
        console.print(f"  ... {tokens.shape[0] - shown} more sequences (--show N prints more)")
    if task:
        from jaxpart.train.tasks import exact_match

        accuracy = exact_match(prompts.answers, tokens)
        console.print(
            f"task accuracy ({task.name}): {accuracy:.1%} exact answers of {tokens.shape[0]}"
        )
    if args.json:
        doc = {
            "method": args.method,
            "model": model.name,
            "dtype": model.dtype,
            "shape": executor.shape.to_dict(),
            "tokens": tokens.tolist(),
            "lengths": lengths.tolist(),
            "generation": asdict(generation),
            "plan": plan.to_dict() if plan is not None else None,
        }
        if task:
            doc["task_accuracy"] = accuracy
        if prompts.tokenizer is not None:
            from jaxpart.io.text import decode

            doc["text"] = [
                decode(prompts.tokenizer, row[:n]) for row, n in zip(tokens, lengths, strict=True)
            ]
        doc["weights_held_bytes"] = held  # by kind
        if model.fp8:
            doc["quantization"] = model.quant.describe()
        if read is not None:
            doc["weights_read_bytes_per_process"] = read
            doc["checkpoint_bytes"] = checkpoint_bytes
        write_text_atomically(args.json, json.dumps(doc))
        console.print(f"written to {args.json}")
    return 0


def _line(prompts: Prompts, i: int, row: list[int]) -> str:
    """Sequence ``i`` as the user reads it: a task's prompt and answer, text, or token ids."""
    if prompts.task:
        return f"  {prompts.task.render(prompts.row(i))} {prompts.task.render(row)}"
    if prompts.tokenizer is not None:
        from jaxpart.io.text import decode

        return (
            f"  {decode(prompts.tokenizer, prompts.row(i))!r} -> {decode(prompts.tokenizer, row)!r}"
        )
    return f"  sequence {i}: {' '.join(map(str, row))}"


def _weights_read(executor) -> tuple[list[int] | None, int | None]:
    """Bytes of the Hugging Face checkpoint each process read to place its weights."""
    if executor.checkpoint_reads is None:
        return None, None
    import numpy as np
    from jax.experimental import multihost_utils

    mine, total = executor.checkpoint_reads
    # Gathered as int32 (jax without x64): KiB and the remainder, exact up to 2 TiB a process.
    pair = np.array([mine // 1024, mine % 1024], np.int32)
    every = np.asarray(multihost_utils.process_allgather(pair)).reshape(-1, 2)
    return [int(kib) * 1024 + int(rest) for kib, rest in every], total
