"""Training the small model on a synthetic task with optax (AdamW, warm-up + cosine, gradient
clipping), so that generations through every placement can be checked by exact match.

Batches are drawn from ``seed`` and the step number, so a run resumed from a checkpoint sees the
batches it would have seen had it not stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpart.config import ConfigError, ModelConfig
from jaxpart.io import checkpoint
from jaxpart.model.decoder import init_params
from jaxpart.model.layers import DEFAULT_ARCH, Arch, arch_of, forward_all
from jaxpart.train.tasks import Task


@dataclass(frozen=True)
class TrainConfig:
    task: str = "copy"
    steps: int = 300
    batch: int = 64
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    every: int = 100  # checkpoint every this many steps (and at the end)

    def __post_init__(self):
        for name in ("steps", "batch", "every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} = {getattr(self, name)}: must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr = {self.lr}: must be > 0")


def optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    # The cosine part needs steps after the warm-up: a short run warms up for a quarter of it.
    warmup = min(tc.warmup, tc.steps // 4)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, tc.lr, warmup, tc.steps, end_value=tc.lr * 0.1
    )
    return optax.chain(
        optax.clip_by_global_norm(tc.clip),
        optax.adamw(schedule, weight_decay=tc.weight_decay),
    )


def loss_and_metrics(params, tokens, mask, arch: Arch = DEFAULT_ARCH):
    logits = forward_all(params, tokens, arch)[:, :-1]
    targets = tokens[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss = (losses * mask).sum() / mask.sum()
    right = (jnp.argmax(logits, -1) == targets) | (mask == 0)
    return loss, {"loss": loss, "exact": right.all(axis=1).mean()}


def make_step(opt: optax.GradientTransformation, arch: Arch = DEFAULT_ARCH):
    @jax.jit
    def step(params, opt_state, tokens, mask):
        grads, metrics = jax.grad(loss_and_metrics, has_aux=True)(params, tokens, mask, arch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def train(
    cfg: ModelConfig,
    tc: TrainConfig,
    directory: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
):
    """Train from scratch, or resume from the newest checkpoint in ``directory``.

    Returns (params, last metrics, first step run).
    """
    task = Task(tc.task)
    task.check(cfg.vocab, cfg.seq_len)
    opt = optimizer(tc)
    params = init_params(cfg, tc.seed)
    opt_state = opt.init(params)
    start = 0
    if directory and checkpoint.latest_step(directory) is not None:
        like = checkpoint.abstract_like
        params, opt_state, start, _ = checkpoint.restore(
            directory, cfg, like(params), opt_target=like(opt_state)
        )
    step_fn = make_step(opt, arch_of(cfg))
    metrics = {}
    for step in range(start, tc.steps):
        tokens, mask = task.training_batch(np.random.default_rng([tc.seed, step]), tc.batch)
        params, opt_state, metrics = step_fn(params, opt_state, tokens, mask)
        done = step + 1
        if on_step:
            on_step(done, metrics)
        if directory and (done % tc.every == 0 or done == tc.steps):
            checkpoint.save(
                directory,
                done,
                params,
                cfg,
                opt_state,
                extra={"task": tc.task, "train": tc.__dict__},
            )
    return params, {k: float(v) for k, v in metrics.items()}, start


def evaluate(cfg: ModelConfig, params, task_name: str, seed: int = 0, batch: int = 256) -> float:
    """Exact-answer accuracy of greedy generation on fresh prompts (not seen in training)."""
    from jaxpart.config import RunShape
    from jaxpart.runtime.executors import ReferenceExecutor
    from jaxpart.train.tasks import exact_match

    task = Task(task_name)
    prompts, answers = task.sample(np.random.default_rng([seed, 2**31 - 1]), batch)
    executor = ReferenceExecutor(cfg, RunShape(batch, task.prompt_len, task.answer_len, 1))
    tokens, _ = executor.generate(executor.place(params), prompts)
    return exact_match(answers, tokens)
