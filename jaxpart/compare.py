"""The main job: the single-device reference, the TP x PP baseline and the layer-wise plan, run on
the same weights and prompts in one process, measured side by side, tokens checked."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxpart.bench import Measurement, decode_breakdown, measure, measured_on
from jaxpart.config import MeshConfig, ModelConfig
from jaxpart.engine import METHODS, PlanChoice, load_checkpoint, make_executor, random_prompts
from jaxpart.kernels.mlp import XLA_KERNEL, KernelChoice
from jaxpart.plan import Plan


@dataclass
class Comparison:
    measured_on: str
    model: ModelConfig
    batch: int
    prompt_len: int
    gen_len: int
    methods: list[Measurement] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    breakdown: dict[str, dict] = field(default_factory=dict)

    def method(self, name: str) -> Measurement:
        return next(m for m in self.methods if m.name == name)

    @property
    def ratios(self) -> dict[str, float]:
        lw, base = self.method("layerwise"), self.method("baseline")
        ref = self.method("reference")
        return {
            "tps_layerwise_over_baseline": lw.tps / base.tps,
            "tpot_layerwise_over_baseline": lw.tpot_ms / base.tpot_ms,
            "decode_step_layerwise_over_reference": lw.decode_step_ms / ref.decode_step_ms,
            "decode_step_baseline_over_reference": base.decode_step_ms / ref.decode_step_ms,
        }

    @property
    def all_tokens_match(self) -> bool:
        return all(m.tokens_match_reference for m in self.methods)

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
            "plan": self.plans["layerwise"].to_dict(),
            "baseline_plan": self.plans["baseline"].to_dict(),
            "breakdown": self.breakdown,
        }


def run_compare(
    cfg: ModelConfig,
    mesh: MeshConfig,
    *,
    batch: int,
    prompt_len: int,
    gen_len: int,
    microbatches: int | None,
    choice: PlanChoice,
    kernel: KernelChoice = XLA_KERNEL,
    repeats: int = 5,
    seed: int = 0,
    progress=None,
    checkpoint: str | None = None,
    prompts=None,
) -> Comparison:
    """Build every executor first (so bad input fails before any work), then measure each.

    ``progress(method, what)`` is called with "placed", "compiled" and "timed" as work is done.
    """
    from jaxpart.model import init_params

    executors = {
        method: make_executor(
            method,
            cfg,
            mesh,
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            microbatches=None if method == "reference" else microbatches,
            choice=choice,
            kernel=kernel,
        )
        for method in METHODS
    }
    params = None if checkpoint else init_params(cfg, seed)
    if prompts is None:
        prompts = random_prompts(cfg, batch, prompt_len, seed)
    result = Comparison(measured_on(mesh.n_devices), cfg, batch, prompt_len, gen_len)
    tokens = {}
    for method, executor in executors.items():
        placed = load_checkpoint(executor, checkpoint) if checkpoint else executor.place(params)
        if progress:
            progress(method, "placed")
        devices = executor.plan.n_devices if executor.plan else 1
        measurement, tokens[method] = measure(
            method,
            executor,
            placed,
            prompts,
            repeats,
            devices,
            on_repeat=(lambda m=method: progress(m, "timed")) if progress else None,
            on_warm=(lambda m=method: progress(m, "compiled")) if progress else None,
        )
        match = bool((tokens[method] == tokens["reference"]).all())
        result.methods.append(measurement.with_match(match))
        if executor.plan is not None:
            result.plans[method] = executor.plan
            result.breakdown[method] = decode_breakdown(executor, measurement.decode_step_ms)
    return result
