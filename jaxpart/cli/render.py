"""Tables for people: the per-layer memory table and the plan, rendered with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from jaxpart.config import (
    FitDefinition,
    MeshConfig,
    Method,
    ModelConfig,
    RunShape,
    format_bytes,
)
from jaxpart.planning.baseline import stage_sizes
from jaxpart.planning.capacity import Capacity, balanced_split, capacity, plan_capacity
from jaxpart.planning.export import ENGINE_NAMES, default_split
from jaxpart.planning.memory import (
    cache_positions,
    discrepancies,
    embedding_params,
    kv_bytes,
    layer_memory,
)
from jaxpart.planning.plan import Plan

if TYPE_CHECKING:
    from jaxpart.perf.engines import Engine
    from jaxpart.perf.search import Candidate
    from jaxpart.perf.simulate import Simulation


def print_table(console: Console, table: Table, keep: int = 1) -> None:
    """Print ``table`` whole where it fits the console; otherwise its columns in groups that fit,
    one table after another, each repeating the first ``keep`` columns. Cells never wrap or get
    cut, so neither does a number (a single column wider than the console is printed whole)."""
    import io

    from rich.cells import cell_len

    def width(columns: list[int]) -> int:
        part = _columns_of(table, columns)
        part.title = part.caption = None
        out = Console(width=10**4, file=io.StringIO(), color_system=None)
        out.print(part)
        return max(cell_len(line) for line in out.file.getvalue().splitlines() or [""])

    everything = list(range(len(table.columns)))
    if width(everything) <= console.width:
        console.print(_columns_of(table, everything))
        return
    keep = min(keep, len(everything) - 1)
    groups, group = [], list(range(keep))
    for i in everything[keep:]:
        if len(group) > keep and width([*group, i]) > console.width:
            groups.append(group)
            group = list(range(keep))
        group.append(i)
    groups.append(group)
    for n, group in enumerate(groups):
        needed = width(group)
        if needed > console.width and keep:  # the kept columns leave no room: drop them
            group = group[keep:]
            needed = width(group)
        part = _columns_of(table, group)
        part.caption = table.caption if n == len(groups) - 1 else None
        if n:
            part.title = f"(continued, {n + 1} of {len(groups)})"
        console.print(part, width=max(console.width, needed))


def _columns_of(table: Table, indices: list[int]) -> Table:
    """A copy of ``table`` with only the columns ``indices``."""
    part = Table(
        title=table.title,
        caption=table.caption,
        box=table.box,
        pad_edge=table.pad_edge,
        padding=table.padding,
        show_header=table.show_header,
    )
    for i in indices:
        col = table.columns[i]
        part.add_column(col.header, justify=col.justify, no_wrap=True, overflow="fold")
    for r in range(table.row_count):
        part.add_row(*(table.columns[i]._cells[r] for i in indices))
    return part


def memory_table(model: ModelConfig, shape: RunShape, figures: str) -> Table:
    """Per-layer memory from the dims, beside the seed's stated figures when the file has them."""
    mem = layer_memory(model, shape)
    st = model.stated
    table = Table(
        title=f"Per-layer memory: {model.name} ({precision(model)}, batch {shape.batch}, "
        f"sequence {model.seq_len}; GB = 10^9 bytes)"
    )
    table.add_column("per layer", overflow="fold")
    table.add_column("derived from the dims", justify="right", overflow="fold")
    if st is not None:
        table.add_column("stated by the seed", justify="right", overflow="fold")

    def row(label: str, derived: str, stated: str = "-") -> None:
        table.add_row(label, derived, *([stated] if st is not None else []))

    row("params", f"{mem.params:,}", f"{st.total_params // model.n_layers:,}" if st else "-")
    row("weights", format_bytes(mem.weight_bytes), format_bytes(st.weight_bytes) if st else "-")
    row(
        "activations, prefill (BxSxd)",
        format_bytes(mem.prefill_activation_bytes),
        format_bytes(st.activation_bytes) if st else "-",
    )
    row("activations, decode (Bxd)", format_bytes(mem.decode_hidden_bytes), "not stated")
    row("decode working set", format_bytes(mem.decode_working_bytes), "not stated")
    row("KV cache (2 x B x S x K/V width)", format_bytes(mem.kv_cache_bytes), "left out")
    row(
        "buffers (estimate)",
        format_bytes(mem.buffer_bytes),
        format_bytes(st.buffer_bytes) if st else "-",
    )
    row("resident set (smem/l2)", format_bytes(mem.weight_bytes + mem.decode_working_bytes), "-")
    row("everything (hbm)", format_bytes(mem.fit_bytes(FitDefinition.EVERYTHING)), "-")
    if st is not None:
        total = st.weight_bytes + st.activation_bytes + st.buffer_bytes
        row("seed's total (w+a+b)", "-", format_bytes(total))
    table.caption = (
        f"whole model: {mem.params * model.n_layers / 1e9:.2f}B params in {model.n_layers} layers, "
        f"+{embedding_params(model) / 1e6:.0f}M in embedding and LM head (not in any layer); "
        f"plan uses {figures} figures"
    )
    return table


def precision(model: ModelConfig) -> str:
    """The model's numbers in a few words: its dtype, and FP8 weights and cache where it has
    them (with the scheme)."""
    parts = [model.dtype]
    if model.fp8:
        parts.append(model.quant.describe())
    if model.kv_dtype != model.dtype:
        parts.append(f"KV cache {model.kv_dtype}")
    return "; ".join(parts)


def plan_summary(plan: Plan) -> str:
    return (
        f"Plan: {plan.model} on {plan.mesh}, {plan.strategy}, capacity {plan.capacity} "
        f"({format_bytes(plan.capacity_bytes)}): {plan.n_stages} stages x {plan.split} "
        f"device(s) x {plan.data_parallel} replica(s) = {plan.n_devices} devices"
    )


def plan_table(plan: Plan, mesh: MeshConfig) -> Table:
    table = Table()
    for col, justify in (
        ("stage", "right"),
        ("layers", "left"),
        ("n", "right"),
        ("devices", "left"),
        ("split", "right"),
        ("bytes / device", "right"),
        ("fits", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for i, s in enumerate(plan.stages):
        layers = f"{s.layers[0]}-{s.layers[-1]}" if len(s.layers) > 1 else str(s.layers[0])
        devices = (
            ",".join(map(str, s.devices))
            if len(s.devices) <= 8
            else (f"{s.devices[0]}..{s.devices[-1]} ({len(s.devices)})")
        )
        fits = (
            s.tier
            if s.tier == "none"
            else (f"{s.tier} ({format_bytes(mesh.tiers[s.tier].capacity_bytes)})")
        )
        table.add_row(
            str(i), layers, str(len(s.layers)), devices, str(s.split), format_bytes(s.bytes), fits
        )
    return table


def window_kv_line(model: ModelConfig, shape: RunShape) -> str:
    """For a model with sliding windows: the KV cache its layers would hold kept to their
    windows (local and global layers apart), beside what jaxpart allocates (every layer's whole
    context)."""
    windows = model.layer_windows or (model.sliding_window,) * model.n_layers
    if not any(windows):
        return ""
    positions = cache_positions(model.seq_len)
    whole = model.n_layers * kv_bytes(model, shape.batch, positions)
    kept = sum(kv_bytes(model, shape.batch, min(w, positions) if w else positions) for w in windows)
    local = sum(1 for w in windows if w)
    return (
        f"sliding windows on {local} of {model.n_layers} layers: their KV cache held to the "
        f"window would be {format_bytes(kept)} for the batch, against the "
        f"{format_bytes(whole)} jaxpart allocates (every layer's whole context; memory model)"
    )


def print_plan(
    console: Console, model: ModelConfig, mesh: MeshConfig, shape: RunShape, plan: Plan
) -> None:
    print_table(console, memory_table(model, shape, plan.figures))
    for line in discrepancies(model, shape):
        console.print(f"  seed discrepancy - {line}")
    line = window_kv_line(model, shape)
    if line:
        console.print(f"  {line}")
    console.print()
    console.print(plan_summary(plan))
    print_table(console, plan_table(plan, mesh))
    for note in plan.notes:
        console.print(f"  note: {note}")


SEED_CLAIM = (
    "the seed claims, on 16 H100s: baseline 12,800 TPS and 0.078 ms, layer-wise 15,360 TPS and "
    "0.065 ms (+20%); its 'TPOT' is the amortised ms/token column"
)


def results_table(comparison) -> Table:
    """Laid out like the seed's table, with the columns it lacks beside it."""
    table = Table(
        title=f"Measured on {comparison.measured_on}: {comparison.model.dtype}, batch "
        f"{comparison.batch}, prompt {comparison.prompt_len}, {comparison.gen_len} new tokens",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),  # one space and the divider between columns: fits 80 columns
    )
    rows = []
    agreement = {a.method: a for a in comparison.agreements}
    for m in comparison.methods:
        name = m.name
        if m.name == comparison.anchor:
            check = "anchor"
        elif m.name in agreement:
            check = f"{agreement[m.name].agreement:.1%}"
        else:
            check = "yes" if m.tokens_match_reference else "NO"
        rows.append(
            (
                comparison.model.name,
                name,
                str(m.devices),
                f"{m.tps:,.0f}",
                f"{m.tpot_ms:.3f}",
                f"{m.ttft_ms:.1f}",
                f"{m.ms_per_token_amortized:.4f}",
                check,
            )
        )
    headers = (
        "Model",
        "Method",
        "Devices",
        "TPS",
        "TPOT\nms",
        "TTFT\nms",
        "ms/token\namortised",
        "agree-\nment" if comparison.agreements else "tokens\nmatch",
    )
    for i, header in enumerate(headers):  # no_wrap: a number is never split or cut
        table.add_column(
            header, justify="left" if i < 2 else "right", no_wrap=True, overflow="fold"
        )
    for row in rows:
        table.add_row(*row)
    return table


def spread_line(comparison) -> str:
    """Each method's TPS range over the interleaved rounds (the table shows medians)."""
    parts = [f"{m.name} {m.tps_range[0]:,.0f}-{m.tps_range[1]:,.0f}" for m in comparison.methods]
    return f"TPS min-max over {comparison.methods[0].repeats} rounds: " + ", ".join(parts)


def breakdown_lines(comparison) -> list[str]:
    lines = []
    reference = comparison.method(Method.REFERENCE)
    for name, b in comparison.breakdown.items():
        step = comparison.method(name).decode_step_ms
        parts = [f"{name}: decode step {step:.2f} ms"]
        if reference is not None:
            ref = reference.decode_step_ms
            parts[0] += f" = {step / ref:.1f}x the single device's {ref:.2f} ms"
        parts += [
            f"{b['ticks_per_step']} ticks a step ({b['stages']} stages, {b['microbatches']} "
            f"microbatches, bubbles {b['bubble_fraction']:.0%}, "
            f"padding {b['padding_fraction']:.0%})",
            f"{b['collective_permutes_per_step']} collective-permutes + "
            f"{b['all_reduces_per_step']} all-reduces a step",
        ]
        if b["collective_ms_per_step"]:
            parts.append(
                f"at the latencies measured here that is ~{b['collective_ms_per_step']:.1f} "
                f"ms ({b['collective_share_of_step']:.0%} of the step)"
            )
        lines.append("; ".join(parts))
    return lines


def simulate_table(sim: Simulation, n_devices_label: str) -> Table:
    """Both methods predicted, the seed's claimed rows beside them."""
    shape = sim.shape
    table = Table(
        title=f"Predicted ({sim.predicted_by}): {sim.model} ({sim.dtype}), batch {shape.batch}, "
        f"prompt {shape.prompt_len}, {shape.gen_len} new tokens",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    headers = (
        "Model",
        "Method",
        "GPUs",
        "TPS",
        "TPOT\nms",
        "TTFT\nms",
        "ms/token\namortised",
        "source",
    )
    for i, header in enumerate(headers):
        table.add_column(
            header, justify="left" if i in (0, 1, 7) else "right", no_wrap=True, overflow="fold"
        )
    for m in sim.predictions.values():
        table.add_row(
            sim.model,
            m.name,
            str(m.devices),
            f"{m.tps:,.0f}",
            f"{m.tpot_ms:.3f}",
            f"{m.ttft_ms:,.0f}",
            f"{m.ms_per_token_amortized:.4f}",
            "predicted",
        )
    for v in sim.seed_verdicts:
        table.add_row(
            sim.model,
            v.method,
            n_devices_label,
            f"{v.claimed_tps:,.0f}",
            "-",
            "-",
            f"{v.claimed_tpot_ms:.4f}",
            "the seed's claim",
        )
    return table


def verdict_lines(sim: Simulation) -> list[str]:
    """The physical floor, and whether each of the seed's claimed figures is possible."""
    fl = sim.floor

    def word(ok: bool) -> str:
        return "possible" if ok else "IMPOSSIBLE"

    lines = [
        f"physical floor ({sim.predicted_by}): every weight ({format_bytes(fl.weight_bytes)})"
        f" and the KV cache ({format_bytes(fl.kv_bytes)} at a mean context of "
        f"{fl.context:.0f}) read once per decode step over all devices: TPOT >= "
        f"{fl.floor_tpot_ms:.3f} ms, TPS <= {fl.max_tps:,.0f}, ms/token amortised >= "
        f"{fl.floor_ms_per_token_amortized:.4f}",
    ]
    for v in sim.seed_verdicts:
        lines.append(
            f"the seed's {v.method}: {v.claimed_tps:,.0f} TPS {word(v.tps_possible)}; "
            f"TPOT {v.claimed_tpot_ms} ms as inter-token latency "
            f"{word(v.tpot_as_latency_possible)}, as amortised ms/token "
            f"{word(v.tpot_as_amortized_possible)}"
        )
    return lines


def search_table(
    top: list[Candidate],
    model,
    mesh,
    shape: RunShape,
    objective: str,
    fitting: int,
    engine: str = "jaxpart",
) -> Table:
    """``plan --auto``'s best placements (``search_terms`` says what decides each)."""
    from jaxpart.perf.validation import band

    lo, hi = band("throughput")
    batch = "the largest batch each holds" if objective == "max-throughput" else shape.batch
    table = Table(
        title=f"The {len(top)} best of {fitting} placements of {model.name} (batch {batch}, "
        f"prompt {shape.prompt_len}, {shape.gen_len} new tokens) that fit {mesh.name}'s HBM, "
        f"by predicted {objective} (perf model, meshes/{mesh.name}.toml, engine {engine}; a "
        f"predicted TPS is {lo:.2f}-{hi:.2f}x the measured one at one geometric SD on "
        "published points)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    headers = ("#", "plan", "stages\nxsplit\nxcopies", "M", "batch", "max\nbatch", "TPS")
    headers += ("TPOT\nms", "TTFT\nms", "memory\n/device")
    for i, header in enumerate(headers):
        table.add_column(
            header, justify="left" if i == 1 else "right", no_wrap=i != 1, overflow="fold"
        )
    for rank, k in enumerate(top, 1):
        p, plan = k.prediction, k.plan
        table.add_row(
            str(rank),
            f"{k.method}: {k.how}",
            f"{plan.n_stages}x{plan.split}x{plan.data_parallel}",
            str(k.microbatches),
            f"{k.shape.batch:,}",
            f"{k.capacity.batch:,}",
            f"{p.tps:,.0f}",
            f"{p.tpot_ms:.2f}",
            f"{p.ttft_ms:,.0f}",
            format_bytes(k.memory_bytes),
        )
    return table


def search_terms(top: list[Candidate]) -> list[str]:
    """What decides each of ``plan --auto``'s placements: a decode tick's largest parts."""
    return [f"#{rank}: {k.deciding_terms()}" for rank, k in enumerate(top, 1)]


def describe_generation(g, result) -> str:
    """How a run generated (greedy or sampled, its stop tokens) and what it generated."""
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


def capacity_source(mesh, profile) -> str:
    return f"memory model, meshes/{mesh.name}.toml, engine {profile.name}"


def capacity_lines(
    model: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    plan: Plan,
    profile: Engine,
    room: Capacity | None = None,
) -> list[str]:
    """The largest batch the plan holds at the run's context (``room``, where the caller has
    it), its tightest stage, and, for a pipeline, what the split that gives that stage the most
    room would hold against the engine's default split."""
    room = room or plan_capacity(model, mesh, plan, shape, profile.memory)
    limit = room.limiting_stage
    split = ",".join(map(str, plan.layers_per_stage))
    out = [
        f"max batch: {room.batch:,} sequences at a context of {room.positions:,} "
        f"({room.per_replica:,} a replica, x{room.replicas}; layers per stage {split}, stage "
        f"{limit} the tightest) (predicted: {capacity_source(mesh, profile)})"
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
    if profile.name in ENGINE_NAMES:
        default = default_split(profile.name, model.n_layers, stages)
        words = f"{ENGINE_NAMES[profile.name]}'s"
    else:  # jaxpart's baseline and the engines without a partition setting
        default, words = stage_sizes(model.n_layers, stages), f"{profile.name}'s"
    a = capacity(model, mesh, balanced, split, replicas, shape, profile.memory).batch
    b = capacity(model, mesh, default, split, replicas, shape, profile.memory).batch
    gain = f"{(a / b - 1) * 100:+.1f}%" if b else "the default holds none"
    return (
        f"balanced split {','.join(map(str, balanced))} holds {a:,}; {words} default split "
        f"{','.join(map(str, default))} holds {b:,} ({gain})"
    )


def map_table(m, title: str) -> Table:
    """A crossover map: a row per Y value, a column per X value; each cell the winner and its
    margin, or "no winner" where the band covers 1, or "-" where nothing could be planned."""
    from jaxpart.perf.crossover import AXIS_WORDS

    table = Table(title=f"Crossover map: {title} (predicted)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(f"{AXIS_WORDS[m.y_key]} \\ {AXIS_WORDS[m.x_key]}", justify="right")
    for x in m.x_values:
        table.add_column(x, justify="center")
    for y in m.y_values:
        row = [y]
        for x in m.x_values:
            c = m.cell(x, y)
            if c.fastest is None:
                row.append("-")
            elif c.margin is None:
                row.append(f"{c.shown(c.fastest)} (alone)")
            elif c.winner is None:
                row.append(f"no winner ({c.shown(c.fastest)} x{c.margin:.2f})")
            else:
                row.append(f"{c.shown(c.winner)} x{c.margin:.2f}")
        table.add_row(*row)
    return table
