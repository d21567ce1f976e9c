"""The main job: the single-device reference, the TP x PP baseline and the layer-wise plan, run on
the same weights and prompts in one process, measured side by side (repeats interleaved), and
checked to compute the same model (``jaxpart.measure.agreement``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from jaxpart.config import MeshConfig, ModelConfig, RunShape, format_bytes
from jaxpart.measure.agreement import Agreement, agree
from jaxpart.measure.bench import (
    Measurement,
    decode_breakdown,
    measure_interleaved,
    measured_on,
    summarize,
)
from jaxpart.model.kernels.backend import AUTO, KernelChoice
from jaxpart.planning.memory import device_memory
from jaxpart.planning.placement import METHODS, PlanChoice
from jaxpart.planning.plan import Plan
from jaxpart.runtime.engine import load_checkpoint, make_executor, model_params, random_prompts


def reference_bytes(cfg: ModelConfig, shape: RunShape) -> int:
    """What the single-device reference holds, by the memory model (``memory.device_memory``):
    every layer's weights and KV cache, the embedding and head, the whole batch's activations
    (one microbatch) and buffers, with the XLA attention path."""
    return device_memory(
        cfg,
        cfg.n_layers,
        1,
        cache_rows=shape.batch,
        rows=shape.batch,
        prompt_len=shape.prompt_len,
        attention="xla",
    ).total


def verdict(ratios: list[float], faster: str, slower: str) -> str:
    """Name a winner only when every interleaved round agrees on it."""
    if min(ratios) > 1:
        return f"{faster} faster in every round"
    if max(ratios) < 1:
        return f"{slower} faster in every round"
    return "within noise: the rounds disagree on the winner"


@dataclass
class Comparison:
    measured_on: str
    model: ModelConfig
    shape: RunShape
    methods: list[Measurement] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    breakdown: dict[str, dict] = field(default_factory=dict)
    tps_ratios: list[float] = field(default_factory=list)  # layer-wise / baseline, per round
    agreements: list[Agreement] = field(default_factory=list)  # 2-byte dtypes
    anchor: str = "reference"  # what the others are checked against
    reference_skipped: str | None = None  # why the reference did not run
    compiles_while_timing: int = 0

    @property
    def batch(self) -> int:
        return self.shape.batch

    @property
    def prompt_len(self) -> int:
        return self.shape.prompt_len

    @property
    def gen_len(self) -> int:
        return self.shape.gen_len

    def method(self, name: str) -> Measurement | None:
        return next((m for m in self.methods if m.name == name), None)

    @property
    def ratios(self) -> dict:
        lw, base, ref = (self.method(n) for n in ("layerwise", "baseline", "reference"))
        out = {
            "tps_layerwise_over_baseline": statistics.median(self.tps_ratios),
            "tps_layerwise_over_baseline_range": [min(self.tps_ratios), max(self.tps_ratios)],
            "tpot_layerwise_over_baseline": lw.tpot_ms / base.tpot_ms,
            "verdict": verdict(self.tps_ratios, "layerwise", "baseline"),
        }
        if ref is not None:
            out["decode_step_layerwise_over_reference"] = lw.decode_step_ms / ref.decode_step_ms
            out["decode_step_baseline_over_reference"] = base.decode_step_ms / ref.decode_step_ms
        return out

    @property
    def all_agree(self) -> bool:
        if self.agreements:
            return all(a.ok for a in self.agreements)
        return all(m.tokens_match_reference is not False for m in self.methods)

    def to_dict(self) -> dict:
        return {
            "measured_on": self.measured_on,
            "model": self.model.name,
            "dtype": self.model.dtype,
            "batch": self.batch,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "methods": [m.to_dict() for m in self.methods],
            "ratios": self.ratios,
            "tps_ratio_per_round": self.tps_ratios,
            "checked_against": self.anchor,
            "reference_skipped": self.reference_skipped,
            "agreement": [a.to_dict() for a in self.agreements],
            "compiles_while_timing": self.compiles_while_timing,
            "plan": self.plans["layerwise"].to_dict(),
            "baseline_plan": self.plans["baseline"].to_dict(),
            "breakdown": self.breakdown,
        }


def run_compare(
    cfg: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    *,
    choice: PlanChoice,
    kernel: KernelChoice = AUTO,
    repeats: int = 5,
    seed: int = 0,
    progress=None,
    checkpoint: str | None = None,
    prompts=None,
) -> Comparison:
    """Build every executor first (so bad input fails before any work), then measure them.

    The reference runs only where the memory model says it fits one device; otherwise the
    placements are checked against the baseline. ``progress(method, what)`` is called with
    "placed", "compiled" and "timed" as work is done.
    """

    hbm = mesh.tiers["hbm"].capacity_bytes
    need = reference_bytes(cfg, shape)
    skipped = None
    methods = list(METHODS)
    if need > hbm:
        skipped = (
            f"the reference is not run: one device would need {format_bytes(need)} (memory "
            f"model) and holds {format_bytes(hbm)}; the placements are checked against the "
            "baseline instead"
        )
        methods.remove("reference")
    executors = {
        method: make_executor(method, cfg, mesh, shape, choice=choice, kernel=kernel)
        for method in methods
    }
    params = None if checkpoint else model_params(cfg, seed)
    if prompts is None:
        prompts = random_prompts(cfg, shape, seed)
    placed = {}
    for method, executor in executors.items():
        placed[method] = (
            load_checkpoint(executor, checkpoint) if checkpoint else executor.place(params)
        )
        if progress:
            progress(method, "placed")
    runners = {m: (lambda m=m: executors[m].timed_generate(placed[m], prompts)) for m in methods}
    timed, warm, compiles = measure_interleaved(runners, repeats, progress)
    anchor = methods[0]
    result = Comparison(
        measured_on(mesh.n_devices),
        cfg,
        shape,
        anchor=anchor,
        reference_skipped=skipped,
        compiles_while_timing=compiles,
    )
    exact = cfg.precision == "float32"
    for method, executor in executors.items():
        devices = executor.plan.n_devices if executor.plan else 1
        match = bool((warm[method].tokens == warm[anchor].tokens).all())
        result.methods.append(summarize(method, devices, timed[method]).with_match(match))
        if executor.plan is not None:
            result.plans[method] = executor.plan
            step_ms = result.methods[-1].decode_step_ms
            result.breakdown[method] = decode_breakdown(executor, step_ms)
    rounds = zip(timed["layerwise"], timed["baseline"], strict=True)
    steps = shape.gen_len - 1
    result.tps_ratios = [base.decode_s / lw.decode_s for lw, base in rounds if steps]
    if not exact:
        tokens = warm[anchor].tokens
        forced = {m: executors[m].teacher_forced(placed[m], prompts, tokens) for m in executors}
        for method in methods[1:]:
            result.agreements.append(agree(method, cfg.precision, forced[anchor], forced[method]))
    return result


def ratio_line(result: Comparison) -> str:
    r = result.ratios
    low, high = r["tps_layerwise_over_baseline_range"]
    median = r["tps_layerwise_over_baseline"]
    return (
        f"layerwise / baseline TPS: {median:.2f}x (median of {len(result.tps_ratios)} "
        f"interleaved rounds, {low:.2f}x to {high:.2f}x): {r['verdict']} "
        f"(measured on {result.measured_on})"
    )
