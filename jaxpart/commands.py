"""What each `jaxpart` command does, given its parsed arguments; `jaxpart.cli` parses them."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from jaxpart.config import ConfigError, load_mesh, load_model
from jaxpart.plan import make_plan


def write_outputs(files: dict[str, str | bytes]) -> None:
    """Write every output of a run at its end, all or none: each is written beside its path
    first, then all are renamed into place; a failure removes what was staged and leaves the
    user's files as they were. Files get the user's umask. In a multi-process run only
    process 0 writes."""
    if "jax" in sys.modules and sys.modules["jax"].process_index() != 0:
        return
    umask = os.umask(0)
    os.umask(umask)
    staged = []
    try:
        for path, content in files.items():
            target = Path(path)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, target in staged:
            os.replace(tmp, target)
    except OSError as e:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str, text: str) -> None:
    """One output file, as ``write_outputs``."""
    write_outputs({path: text})


def plan_choice(args):
    """How to place the model, from --capacity --strategy --layers-per-stage --tp --pp."""
    from jaxpart.placement import PlanChoice

    return PlanChoice(
        capacity=args.capacity,
        strategy=args.strategy,
        layers_per_stage=tuple(args.layers_per_stage) if args.layers_per_stage else None,
        tp=args.tp,
        pp=args.pp,
    )


def _model_from_args(args):
    """The model --model names, in --dtype where it is given."""
    model = load_model(args.model)
    return model.with_dtype(args.dtype) if args.dtype else model


def _shaped_model(args):
    """The model file's config with the run shape the flags give."""
    model = _model_from_args(args)
    prompt_len, gen_len = args.prompt_len or model.prompt_len, args.gen_len or model.gen_len
    _check_context(model, prompt_len, gen_len)
    return model.replace(batch=args.batch or model.batch, prompt_len=prompt_len, gen_len=gen_len)


def _plan_from_args(args) -> tuple:
    model = _shaped_model(args)
    mesh = load_mesh(args.mesh)
    if args.devices is not None and args.devices > mesh.n_devices:
        raise ConfigError(
            f"--devices = {args.devices}: --mesh {mesh.name} has {mesh.n_devices} devices; "
            "plan for at most that many (or give a larger mesh file)"
        )
    plan = make_plan(
        model,
        mesh,
        capacity=args.capacity,
        strategy=args.strategy,
        devices=args.devices,
        figures=args.figures,
        layers_per_stage=args.layers_per_stage,
    )
    return model, mesh, plan


def cmd_plan(args, console: Console) -> int:
    from jaxpart.report import print_plan

    if args.auto:
        _refuse_beside(
            args,
            "--auto",
            "--auto searches every placement itself",
            ("capacity", "strategy", "layers_per_stage", "devices", "figures"),
        )
        return _plan_auto(args, console)
    model, mesh, plan = _plan_from_args(args)
    print_plan(console, model, mesh, plan)
    if args.json:
        write_text_atomically(args.json, plan.to_json())
        console.print(f"plan written to {args.json}")
    return 0


def _plan_auto(args, console: Console) -> int:
    """``plan --auto``: the ten best placements that fit, and what decides between them."""
    from jaxpart.report import print_table, search_table, search_terms
    from jaxpart.search import search_plans

    model, mesh = _shaped_model(args), load_mesh(args.mesh)
    ranked = search_plans(model, mesh, objective=args.objective)
    top = ranked[:10]
    print_table(console, search_table(top, model, mesh, args.objective, len(ranked)), keep=2)
    console.print("a decode tick's largest parts, in us (predicted):")
    for line in search_terms(top):
        console.print(f"  {line}")
    if args.json:
        doc = {
            "model": model.name,
            "mesh": mesh.name,
            "batch": model.batch,
            "prompt_len": model.prompt_len,
            "gen_len": model.gen_len,
            "objective": args.objective,
            "predicted_by": f"perf model, meshes/{mesh.name}.toml",
            "candidates_fitting": len(ranked),
            "top": [k.to_dict() for k in top],
        }
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"written to {args.json}")
    return 0


def _auto_choice(model, mesh, choice, batch, prompt_len, gen_len, console: Console):
    """``compare --auto``: the best layer-wise and the best TP x PP plan of ``plan --auto``."""
    from dataclasses import replace

    from jaxpart.search import best_of_each, search_plans

    ranked = search_plans(model, mesh, batch=batch, prompt_len=prompt_len, gen_len=gen_len)
    best = best_of_each(ranked)
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


def _run_setup(args, console: Console):
    """Model (with --dtype), mesh with its devices started, plan choice and kernel choice."""
    model = _model_from_args(args)
    mesh = load_mesh(args.mesh)
    _start_devices(args, mesh, console)

    choice = plan_choice(args)
    return model, mesh, choice, kernel_choice(args, mesh)


def cmd_compare(args, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxpart import report
    from jaxpart.compare import ratio_line, run_compare

    if args.plot:
        from jaxpart.plot import require_matplotlib

        require_matplotlib()
    _check_prompt_flags(args)
    if args.auto:
        _refuse_beside(
            args,
            "--auto",
            "--auto chooses both placements itself",
            ("capacity", "strategy", "layers_per_stage", "tp", "pp"),
        )
    predict_for = (load_model(args.predict_for[0]), load_mesh(args.predict_for[1]))
    model, mesh, choice, kernel = _run_setup(args, console)
    task, prompts, _ = _task_prompts(args, model)
    tokenizer, text_ids = _text_prompts(args, model)
    if tokenizer is not None:
        prompts = text_ids
    given = task is not None or tokenizer is not None
    gen_len = task.answer_len if task else (args.gen_len or model.gen_len)
    batch = len(prompts) if given else (args.batch or model.batch)
    prompt_len = max(len(p) for p in prompts) if given else (args.prompt_len or model.prompt_len)
    if gen_len < 2:
        raise ConfigError(f"--gen-len = {gen_len}: compare needs >= 2 new tokens to time decoding")
    if args.auto:
        choice = _auto_choice(model, mesh, choice, batch, prompt_len, gen_len, console)
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if not args.auto:
        _check_tp_pp(args, model, mesh)
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
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            microbatches=args.microbatches,
            choice=choice,
            kernel=kernel,
            repeats=args.repeats,
            seed=args.seed,
            progress=progress,
            checkpoint=args.checkpoint,
            prompts=prompts,
        )
    layerwise = result.plans["layerwise"]
    from jaxpart.engine import describe_weights

    weights = describe_weights(model, args.seed, args.checkpoint)
    prompts_from = f"task {task.name}" if task else f"random, seed {args.seed}"
    if tokenizer is not None:
        prompts_from = f"{len(prompts)} text prompt(s)"
    console.print(f"weights: {weights}; prompts: {prompts_from}")
    console.print(report.plan_summary(layerwise))
    report.print_table(console, report.plan_table(layerwise, mesh))
    console.print(report.plan_summary(result.plans["baseline"]))
    if result.reference_skipped:
        console.print(result.reference_skipped)
    report.print_table(console, report.results_table(result), keep=2)
    console.print(report.spread_line(result))
    console.print(ratio_line(result))
    for a in result.agreements:
        console.print(
            f"  {a.method} vs {result.anchor}, teacher-forced ({a.dtype}): chooses the same token "
            f"at {a.agreement:.1%} of steps; max |dlogit| {a.max_logit_delta:.4f}; "
            f"{a.faults} choice(s) differ by more than the rounding tolerance {a.tolerance}"
            + (f" (worst gap {a.worst_gap:.3f})" if a.faults else "")
        )
    for line in report.breakdown_lines(result):
        console.print(f"  {line}")
    if mesh.platform == "cpu":
        console.print(
            "  caveat: simulated CPU devices share the host's cores and caches, so these ratios "
            "say nothing yet about GPUs"
        )
    console.print(f"  {report.SEED_CLAIM}")
    predicted_section(*predict_for, console)
    if not result.all_agree:
        what = "its tokens" if not result.agreements else "beyond rounding"
        console.print(f"[bold red]a placement disagrees with the {result.anchor} ({what})[/]")
    outputs: dict[str, str | bytes] = {}
    if args.json:
        doc = {**result.to_dict(), "weights": weights, "prompts": prompts_from}
        outputs[args.json] = json.dumps(doc, indent=2)
    if args.plot:
        from jaxpart.plot import plot_comparison

        outputs[args.plot] = plot_comparison(result)
    write_outputs(outputs)
    for path in outputs:
        console.print(f"written to {path}")
    return 0 if result.all_agree else 1


def _text_prompts(args, model):
    """(tokenizer or None, prompt ids) for --text / --prompts, else (None, None). A prompts file
    of token-id lists needs no tokenizer (one is used to show text when the model has it)."""
    texts = list(args.text or [])
    ids = None
    if args.prompts:
        from jaxpart.text import read_prompts

        read = read_prompts(args.prompts)
        if isinstance(read[0], list):
            ids = read
        else:
            texts += read
    if not texts and ids is None:
        return None, None
    for flag in ("prompt", "task"):
        if getattr(args, flag, None):
            raise ConfigError(f"--text/--prompts and --{flag}: give one of them")
    from jaxpart.text import encode, tokenizer_for

    if ids is not None:
        if texts:
            raise ConfigError("--text and a --prompts file of token ids: give one of them")
        bad = [t for row in ids for t in row if t >= model.vocab]
        if bad:
            raise ConfigError(f"--prompts: token {bad[0]} is outside the vocab [0, {model.vocab})")
        tokenizer = tokenizer_for(model) if _has_tokenizer(model) else None
        return tokenizer, ids
    tokenizer = tokenizer_for(model)
    return tokenizer, encode(tokenizer, texts, model.vocab)


def _has_tokenizer(model) -> bool:
    return bool(model.hf_folder and (model.hf_folder / "tokenizer.json").is_file())


def _generation(args, model, tokenizer):
    """The GenerationConfig the sampling flags give; the tokenizer's EOS stops too."""
    from jaxpart.generation import GenerationConfig
    from jaxpart.text import eos_tokens

    stop = tuple(args.stop_tokens or ())
    if tokenizer is not None:
        stop += tuple(t for t in eos_tokens(model) if t not in stop)
    g = GenerationConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.sampling_seed,
        stop_tokens=stop,
        pad_token=args.pad_token,
    )
    g.check_vocab(model.vocab)
    return g


def _check_tp_pp(args, model, mesh) -> None:
    """A --tp / --pp that cannot split the model is refused before any work (planning the
    baseline would refuse it too, later)."""
    from jaxpart.baseline import check_shape

    check_shape(model, args.tp, args.pp, mesh.n_devices)


def _refuse_beside(args, flag: str, why: str, names: tuple[str, ...]) -> None:
    """Flags that ``flag`` would ignore are refused by name, not silently dropped: any of
    ``names`` given a value other than its default."""
    from jaxpart.cli import defaults_of

    defaults = defaults_of(args.command)
    for name in names:
        value = getattr(args, name)
        if value != defaults[name]:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise ConfigError(
                f"--{name.replace('_', '-')} = {shown} and {flag}: {why}; give one of them"
            )


def _check_prompt_flags(args) -> None:
    """Flags that would be ignored beside the prompts given are refused, by name."""
    given = [f for f in ("prompt", "task", "text", "prompts") if getattr(args, f, None)]
    if given and args.prompt_len:
        raise ConfigError(
            f"--prompt-len = {args.prompt_len} and --{given[0]}: the prompts set their own "
            "length; give one of them"
        )
    listed = [f for f in ("text", "prompts") if getattr(args, f, None)]
    if listed and args.batch:
        raise ConfigError(
            f"--batch = {args.batch} and --{listed[0]}: the batch is one sequence a prompt; "
            "give one of them"
        )


def _task_prompts(args, model):
    """(task, prompts, answers) for --task, else Nones; the prompts come from --seed."""
    if not args.task:
        return None, None, None
    import numpy as np

    from jaxpart.tasks import Task

    if getattr(args, "prompt", None):
        raise ConfigError("--prompt and --task: give one of them")
    task = Task(args.task)
    task.check(model.vocab, model.seq_len)
    prompts, answers = task.sample(np.random.default_rng([args.seed, 1]), args.batch or model.batch)
    return task, prompts, answers


def cmd_generate(args, console: Console) -> int:
    _check_prompt_flags(args)
    model, mesh, choice, kernel = _run_setup(args, console)
    from jaxpart.engine import generate

    task, prompts, answers = _task_prompts(args, model)
    tokenizer, text_ids = _text_prompts(args, model)
    if text_ids is not None:
        prompts = text_ids
    generation = _generation(args, model, tokenizer)
    given = prompts if task is not None or text_ids is not None else args.prompt
    n_rows = len(given) if given is not None and task is None and text_ids is not None else None
    batch = n_rows or args.batch or model.batch
    shown = min(args.show or batch, batch)

    def render(i, prompt, row) -> str:
        if task:
            return f"  {task.render(prompt)} {task.render(row)}"
        if tokenizer is not None:
            from jaxpart.text import decode

            return f"  {decode(tokenizer, prompt)!r} -> {decode(tokenizer, row)!r}"
        return f"  sequence {i}: {' '.join(map(str, row))}"

    streamed: list[list[int]] = [[] for _ in range(shown)]
    live = None
    if args.method == "baseline":
        _check_tp_pp(args, model, mesh)
    if console.is_terminal:  # a spinner while compiling, then tokens as each call returns them
        from rich.console import Group
        from rich.live import Live
        from rich.spinner import Spinner

        spinner = Spinner("dots", text=f"compiling and running {args.method} on {mesh.name}")
        live = Live(spinner, console=console, transient=True, refresh_per_second=8)

        def on_tokens(new):
            for i in range(shown):
                streamed[i].extend(int(t) for t in new[i])
            prompt_rows = given if given is not None else [[]] * shown
            lines = [render(i, prompt_rows[i], streamed[i]) for i in range(shown)]
            spinner.update(text=f"generating: new tokens so far, per sequence: {len(streamed[0])}")
            live.update(Group(spinner, "\n".join(lines)))

    else:
        on_tokens = None
    with live if live is not None else nullcontext():
        result = generate(
            args.method,
            model,
            mesh,
            batch=args.batch,
            prompt_len=args.prompt_len,
            gen_len=task.answer_len if task else args.gen_len,
            microbatches=args.microbatches,
            seed=args.seed,
            prompts=given,
            choice=choice,
            kernel=kernel,
            checkpoint=args.checkpoint,
            generation=generation,
            on_tokens=on_tokens,
        )
    tokens, _, executor = result
    lengths = result.lengths
    plan = executor.plan
    from jaxpart.report import plan_summary

    console.print(f"method: {args.method} ({model.name}, {model.dtype})")
    if plan is not None:
        console.print(plan_summary(plan))
        console.print(
            f"schedule: {executor.shape.microbatches} microbatches over {plan.n_stages} stages; "
            f"padding (idle share of stage-layer slots): {executor.padding_fraction:.0%}"
        )
    from jaxpart.engine import describe_weights

    console.print(f"weights: {describe_weights(model, args.seed, args.checkpoint)}")
    console.print(f"generation: {_describe_generation(generation, result.generation)}")
    read, checkpoint_bytes = _weights_read(executor)
    if read is not None:
        from jaxpart.config import format_bytes

        console.print(
            f"read from the checkpoint, per process: "
            f"{', '.join(format_bytes(b) for b in read)} of {format_bytes(checkpoint_bytes)}"
        )
    accuracy = None
    prompt_rows = given if given is not None else [[]] * tokens.shape[0]
    for i in range(shown):
        row = tokens[i, : lengths[i]].tolist()
        line = render(i, prompt_rows[i], row)
        if task:
            ok = (tokens[i, : task.answer_len] == answers[i]).all()
            line += f"  {'ok' if ok else 'WRONG, expected ' + task.render(answers[i])}"
        console.print(line)
    if tokens.shape[0] > shown:
        console.print(f"  ... {tokens.shape[0] - shown} more sequences (--show N prints more)")
    if task:
        from jaxpart.tasks import exact_match

        accuracy = exact_match(answers, tokens)
        console.print(
            f"task accuracy ({task.name}): {accuracy:.1%} exact answers of {tokens.shape[0]}"
        )
    if args.json:
        doc = {
            "method": args.method,
            "model": model.name,
            "dtype": model.dtype,
            "tokens": tokens.tolist(),
            "lengths": lengths.tolist(),
            "generation": asdict(generation),
            "plan": plan.to_dict() if plan is not None else None,
        }
        if task:
            doc["task_accuracy"] = accuracy
        if tokenizer is not None:
            from jaxpart.text import decode

            doc["text"] = [
                decode(tokenizer, row[:n]) for row, n in zip(tokens, lengths, strict=True)
            ]
        if read is not None:
            doc["weights_read_bytes_per_process"] = read
            doc["checkpoint_bytes"] = checkpoint_bytes
        write_text_atomically(args.json, json.dumps(doc))
        console.print(f"written to {args.json}")
    return 0


def _describe_generation(g, result) -> str:
    how = (
        "greedy"
        if g.greedy
        else (
            f"sampled at temperature {g.temperature}"
            + (f", top-k {g.top_k}" if g.top_k else "")
            + (f", top-p {g.top_p}" if g.top_p < 1 else "")
            + f", seed {g.seed}"
        )
    )
    stops = f"; stop tokens {list(g.stop_tokens)}" if g.stop_tokens else ""
    return (
        f"{how}{stops}; {int(result.lengths.sum()):,} tokens generated "
        f"({result.decode_steps} decode steps in {result.decode_calls} compiled call(s))"
    )


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


def kernel_choice(args, mesh):
    from jaxpart.kernels.backend import KernelChoice

    # Kernel tiles are sized to what one block may hold on chip (the mesh's smem tier), and
    # spread over its SMs.
    smem = mesh.tiers["smem"]
    return KernelChoice(
        mlp=args.mlp_kernel,
        attention=args.attention,
        sram_bytes=smem.capacity_bytes,
        sm_count=smem.sm_count,
        strict=args.strict,
    )


def _start_devices(args, mesh, console: Console) -> None:
    """Before jax starts: join the other processes of a multi-host run, and give a CPU mesh its
    simulated devices (users never type XLA flags). Only process 0 prints."""
    from jaxpart.distributed import Distributed, initialize, is_primary

    setup = Distributed(
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        timeout_s=args.init_timeout,
    )
    initialize(setup, mesh)
    if not is_primary():
        console.quiet = True


def cmd_simulate(args, console: Console) -> int:
    from jaxpart import report
    from jaxpart.perfmodel import constants_from, parse_sweep
    from jaxpart.simulate import run_simulate, run_sweep
    from jaxpart.validation import ratio_words

    if args.validate:
        _refuse_beside(
            args,
            "--validate",
            "--validate predicts each published point at its own model, GPUs and shape",
            ("model", "mesh", "sweep", "calibration", "batch", "prompt_len", "gen_len")
            + ("microbatches", "dtype", "capacity", "strategy", "layers_per_stage", "tp", "pp"),
        )
        return _validate(args, console)
    model, mesh = _model_from_args(args), load_mesh(args.mesh)
    sweep = parse_sweep(args.sweep) if args.sweep else None
    constants = constants_from(mesh, args.calibration)
    choice = plan_choice(args)
    if not sweep:  # here a baseline that cannot be split is bad input, not a prediction
        _check_tp_pp(args, model, mesh)
    shape = dict(
        batch=args.batch or model.batch,
        prompt_len=args.prompt_len or model.prompt_len,
        gen_len=args.gen_len or model.gen_len,
        microbatches=args.microbatches,
    )
    _check_context(model, shape["prompt_len"], shape["gen_len"])
    sim = run_simulate(model, mesh, constants, choice, **shape)
    if sweep:
        sim["sweep"] = run_sweep(model, mesh, constants, choice, *sweep, **shape)
    for line in sim["calibration"]:
        console.print(f"calibrated: {line}")
    _print_prediction(console, sim, mesh, "layerwise / baseline TPS", f"; {sim['why']}")
    for line in report.verdict_lines(sim) + sim["notes"]:
        console.print(f"  {line}")
    if sweep:
        sw = sim["sweep"]
        for row in sw["rows"]:
            console.print(
                f"  {sw['key']} = {row['value']:>6}: layerwise / baseline TPS "
                f"{ratio_words(row['ratio'])} ({row['layerwise_tps']:,.0f} vs "
                f"{row['baseline_tps']:,.0f}); {row['why']}"
            )
        console.print(f"  {sw['crossover']} (predicted)")
        for note in dict.fromkeys(sw["notes"]):
            console.print(f"  note: {note}")
    if args.json:
        write_text_atomically(args.json, json.dumps(sim, indent=2))
        console.print(f"written to {args.json}")
    return 0


def predicted_section(model, mesh, console: Console) -> None:
    """The answer for a GPU pod, under a measured CPU table: both placements of ``model`` on
    ``mesh`` by the perf model, at the model file's run shape, with the model's error band."""
    from jaxpart.perfmodel import constants_from
    from jaxpart.placement import DEFAULT_CHOICE
    from jaxpart.simulate import run_simulate

    sim = run_simulate(
        model,
        mesh,
        constants_from(mesh),
        DEFAULT_CHOICE,
        batch=model.batch,
        prompt_len=model.prompt_len,
        gen_len=model.gen_len,
    )
    _print_prediction(console, sim, mesh, f"predicted layerwise / baseline TPS on {mesh.name}")


def _print_prediction(console: Console, sim: dict, mesh, label: str, why: str = "") -> None:
    """A prediction's table, its layerwise / baseline ratio with the band, and each method that
    could not be planned with the reason."""
    from jaxpart import report
    from jaxpart.validation import ratio_words

    report.print_table(console, report.simulate_table(sim, str(mesh.n_devices)), keep=2)
    ratio = sim["ratios"]["tps_layerwise_over_baseline"]
    if ratio is not None:
        console.print(f"{label}: {ratio_words(ratio)}{why}")
    for method, reason in sim["unplanned"].items():
        console.print(f"{method}: not predicted, it cannot be planned for this run: {reason}")


def _check_context(model, prompt_len: int, gen_len: int) -> None:
    """The run must fit the model's context, as a real run checks it."""
    if prompt_len + gen_len > model.seq_len:
        flag = "--prompt-len" if prompt_len >= model.seq_len else "--gen-len"
        value = prompt_len if flag == "--prompt-len" else gen_len
        raise ConfigError(
            f"{flag} = {value}: prompt {prompt_len} + generation {gen_len} = "
            f"{prompt_len + gen_len} exceeds the model's seq_len = {model.seq_len} ({model.source})"
        )


def _validate(args, console: Console) -> int:
    """``simulate --validate``: every published point, predicted beside measured."""
    from rich.table import Table

    from jaxpart.report import print_table
    from jaxpart.validation import check_all, summary

    points, stats = check_all(), summary()
    table = Table(title="The perf model against published measurements (tests/data/published.toml)")
    for col in ("point", "gpu", "dtype", "TPxPP", "batch", "in/out", "metric", "measured"):
        table.add_column(col, justify="left" if col in ("point", "metric") else "right")
    table.add_column("predicted", justify="right")
    table.add_column("pred/meas", justify="right")
    for p in points:
        table.add_row(
            p.id,
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
    print_table(console, table)
    for kind, st in stats.items():
        console.print(
            f"{kind}: {st['points']} points, predicted / measured geometric mean "
            f"{st['geomean_ratio']:.2f} (x/ {math.exp(st['log_sd']):.2f} one geometric SD), "
            f"range {st['min_ratio']:.2f}-{st['max_ratio']:.2f}"
        )
    console.print(
        "constants: the timing tables of meshes/h100x16.toml, a100x8.toml and h200x8.toml, one "
        "set per GPU kind (fixed costs and FP8/KV efficiencies were set on these points)"
    )
    if args.json:
        doc = {"points": [{**asdict(p), "ratio": p.ratio} for p in points], "summary": stats}
        write_text_atomically(args.json, json.dumps(doc, indent=2))
        console.print(f"written to {args.json}")
    return 0


def cmd_train(args, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    model = load_model(args.model)
    from jaxpart import checkpoint
    from jaxpart.train import TrainConfig, evaluate, train

    given = {k: getattr(args, k) for k in ("steps", "batch", "lr", "every")}
    tc = TrainConfig(
        task=args.task, seed=args.seed, **{k: v for k, v in given.items() if v is not None}
    )
    if args.checkpoint and checkpoint.latest_step(args.checkpoint) is not None:
        step, _ = checkpoint.read_meta(args.checkpoint, model)  # a wrong model fails here
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


def cmd_verify(args, console: Console) -> int:
    from jaxpart.config import format_bytes
    from jaxpart.sharding import ensure_cpu_devices
    from jaxpart.verify import cost_check, verify

    model, mesh = _model_from_args(args), load_mesh(args.mesh)
    if args.batch:
        model = model.replace(batch=args.batch)
    _check_context(model, args.prompt_len or model.prompt_len, args.gen_len or model.gen_len)
    # Always simulated CPU devices, as many as the mesh has: nothing is allocated.
    ensure_cpu_devices(mesh.n_devices)
    choice = plan_choice(args)
    with console.status("compiling") as status:
        result = verify(
            model,
            mesh,
            args.method,
            choice,
            prompt_len=args.prompt_len or model.prompt_len,
            gen_len=args.gen_len or model.gen_len,
            microbatches=args.microbatches,
            progress=lambda p: status.update(f"lowering and compiling {p} (abstract arrays)"),
        )
        status.update("XLA's cost analysis of one decode step")
        result["cost_check"] = cost_check(model, model.batch)
    pred = result["predicted_per_device"]
    if result["cuda"]:
        console.print(
            f"{args.method} plan of {model.name} (batch {model.batch}) on {mesh.name}, lowered "
            "for CUDA with the kernels a GPU run uses (auto):"
        )
        for name, low in result["cuda"].items():
            console.print(
                f"  {name}: {low['pallas_kernels']} Pallas (Triton) kernel calls; largest buffer "
                f"it creates {format_bytes(low['largest_intermediate_bytes'])} "
                f"({low['largest_intermediate']})"
            )
    console.print(
        f"{args.method} plan of {model.name} (batch {model.batch}) on {mesh.name}, compiled for "
        f"{mesh.n_devices} simulated CPU devices from abstract arrays (XLA kernel paths: a CUDA "
        "program needs a GPU to compile); per device:"
    )
    cpu = result["predicted_for_cpu_compile"]
    hbm = format_bytes(result["hbm_bytes"])
    for name, p in result["programs"].items():
        console.print(
            f"  XLA {name}: arguments {format_bytes(p['argument_bytes'])}, temporaries "
            f"{format_bytes(p['temp_bytes'])}, outputs {format_bytes(p['output_bytes'])} "
            f"(aliased {format_bytes(p['alias_bytes'])}); peak {format_bytes(p['peak_bytes'])}"
        )
    console.print(
        f"  memory model for this CPU compile: {_memory_parts(cpu)} = "
        f"{format_bytes(cpu['total'])}, {result['predicted_over_xla_peak']:.3f}x XLA's peak of "
        f"{format_bytes(result['xla_peak_bytes'])} (weights, embedding, head and KV cache: "
        f"{result['predicted_state_over_xla']:.3f}x XLA's decode arguments and outputs)"
    )
    console.print(
        f"  memory model on {mesh.name} ({'flash' if mesh.platform == 'gpu' else 'XLA'} "
        f"attention, buffers included): {_memory_parts(pred)} = {format_bytes(pred['total'])}: "
        f"{'fits' if result['fits_hbm'] else 'does NOT fit'} {hbm} of HBM"
    )
    cost = result["cost_check"]
    console.print(
        f"  one decode step on one device (batch {model.batch}, float32, attending over "
        f"{cost['attended_positions']} positions: XLA counts the attention's loop over KV blocks "
        f"once), XLA's cost analysis vs the perf model: {cost['xla_flops'] / 1e9:.2f} vs "
        f"{cost['model_flops'] / 1e9:.2f} GFLOP "
        f"({cost['xla_flops'] / cost['model_flops'] - 1:+.1%}); bytes accessed "
        f"{format_bytes(cost['xla_bytes_accessed'])} vs the model's minimum "
        f"{format_bytes(cost['model_bytes'])} (XLA counts every operand of every op: "
        "intermediates and the cache update, which the model does not count)"
    )
    if not result["fits_hbm"]:
        console.print(
            "  more --microbatches shrink a prefill's activations (a microbatch's rows x prompt)"
        )
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=2))
        console.print(f"written to {args.json}")
    return 0


def _memory_parts(parts: dict) -> str:
    from jaxpart.config import format_bytes

    names = {"kv_cache": "KV cache", "embedding_and_head": "embedding and head"}
    names |= {"cpu_widening": "XLA CPU's f32 copies"}
    return " + ".join(
        f"{names.get(k, k)} {format_bytes(v)}" for k, v in parts.items() if k != "total" and v
    )


def cmd_launch(args, console: Console) -> int:
    from jaxpart.launch import launch

    return launch(args.processes, args.run, args.init_timeout)


COMMANDS = {
    "launch": cmd_launch,
    "train": cmd_train,
    "verify": cmd_verify,
    "plan": cmd_plan,
    "compare": cmd_compare,
    "generate": cmd_generate,
    "simulate": cmd_simulate,
}
