"""Generation by any method on the same weights and prompts: the single-device reference, the
TP x PP baseline and the layer-wise plan. Greedy decoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import jax
import jax.numpy as jnp

from jaxpart.baseline import baseline_plan
from jaxpart.config import ConfigError, MeshConfig, ModelConfig
from jaxpart.model import empty_cache, forward
from jaxpart.partition import Plan, make_plan
from jaxpart.pipeline import PipelineExecutor, RunShape, check_tokens

METHODS = ("reference", "baseline", "layerwise")


class ReferenceExecutor:
    """The whole model on one device; the executors' answers are checked against it."""

    def __init__(self, cfg: ModelConfig, shape: RunShape, device=None):
        shape.check(cfg)
        self.cfg, self.shape = cfg, shape
        self.device = device or jax.devices()[0]
        self.plan = None
        self._prefill = jax.jit(self._prefill_fn)
        self._decode = jax.jit(self._decode_fn, donate_argnums=(2, 3))

    def place(self, params: dict) -> dict:
        return jax.device_put(params, self.device)

    def _prefill_fn(self, params, prompts):
        k, v = empty_cache(self.cfg, prompts.shape[0], params["embed"].dtype)
        logits, k, v = forward(params, prompts, k, v, 0)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits, k, v

    def _decode_fn(self, params, first, k, v):
        steps, start = self.shape.gen_len - 1, self.shape.prompt_len

        def step(i, carry):
            tok, k, v, out = carry
            logits, k, v = forward(params, tok[:, None], k, v, start + i)
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return tok, k, v, out.at[i].set(tok)

        out = jnp.zeros((steps, first.shape[0]), jnp.int32)
        _, k, v, out = jax.lax.fori_loop(0, steps, step, (first, k, v, out))
        return out.T, k, v

    def generate(self, placed, prompts) -> tuple[np.ndarray, np.ndarray]:
        check_tokens(np.asarray(prompts), self.cfg)
        prompts = jax.device_put(np.asarray(prompts, np.int32), self.device)
        first, logits, k, v = self._prefill(placed, prompts)
        if self.shape.gen_len == 1:
            return np.asarray(first)[:, None], np.asarray(logits)
        rest, _, _ = self._decode(placed, first, k, v)
        return np.concatenate([np.asarray(first)[:, None], np.asarray(rest)], 1), np.asarray(logits)


@dataclass(frozen=True)
class PlanChoice:
    """How to place the model: for the layer-wise method, the partitioner's arguments."""

    capacity: str | None = None
    strategy: str = "greedy"
    layers_per_stage: tuple[int, ...] | None = None
    tp: int = 8
    pp: int = 2


def plan_for(method: str, cfg: ModelConfig, mesh: MeshConfig, choice: PlanChoice) -> Plan | None:
    if method == "reference":
        return None
    if method == "baseline":
        return baseline_plan(cfg, mesh, choice.tp, choice.pp)
    if method == "layerwise":
        return make_plan(
            cfg,
            mesh,
            capacity=choice.capacity,
            strategy=choice.strategy,
            layers_per_stage=choice.layers_per_stage,
        )
    raise ConfigError(f"--method = {method!r}: use one of {list(METHODS)}")


def make_executor(method: str, cfg: ModelConfig, mesh: MeshConfig, shape: RunShape,
                  choice: PlanChoice = PlanChoice()):
    plan = plan_for(method, cfg, mesh, choice)
    if plan is None:
        return ReferenceExecutor(cfg, shape)
    return PipelineExecutor(cfg, plan, shape)


def random_prompts(cfg: ModelConfig, batch: int, prompt_len: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab, (batch, prompt_len), dtype=np.int32)
