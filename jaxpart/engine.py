"""Generation by any method on the same weights and prompts: the single-device reference, the
TP x PP baseline and the layer-wise plan. Greedy decoding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.baseline import baseline_plan
from jaxpart.config import ConfigError, MeshConfig, ModelConfig
from jaxpart.kernels.mlp import XLA_KERNEL, KernelChoice
from jaxpart.layers import forward
from jaxpart.model import empty_cache
from jaxpart.pipeline import Executor, Generation, PipelineExecutor, RunShape, check_tokens
from jaxpart.plan import Plan, make_plan

METHODS = ("reference", "baseline", "layerwise")


class ReferenceExecutor(Executor):
    """The whole model on one device; the executors' answers are checked against it."""

    def __init__(
        self, cfg: ModelConfig, shape: RunShape, device=None, kernel: KernelChoice = XLA_KERNEL
    ):
        shape.check(cfg)
        self.cfg, self.shape, self.kernel = cfg, shape, kernel
        self.device = device or jax.local_devices()[0]  # each process runs its own
        self.plan = None
        self._prefill = jax.jit(self._prefill_fn)
        self._decode = jax.jit(self._decode_fn, donate_argnums=(2, 3))

    def place(self, params: dict) -> dict:
        return jax.device_put(params, self.device)

    def _prefill_fn(self, params, prompts):
        k, v = empty_cache(self.cfg, prompts.shape[0], params["embed"].dtype)
        logits, k, v = forward(params, prompts, k, v, 0, self.kernel)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits, k, v

    def _decode_fn(self, params, first, k, v):
        steps, start = self.shape.gen_len - 1, self.shape.prompt_len

        def step(i, carry):
            tok, k, v, out = carry
            logits, k, v = forward(params, tok[:, None], k, v, start + i, self.kernel)
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return tok, k, v, out.at[i].set(tok)

        out = jnp.zeros((steps, first.shape[0]), jnp.int32)
        _, k, v, out = jax.lax.fori_loop(0, steps, step, (first, k, v, out))
        return out.T, k, v

    def timed_generate(self, placed, prompts) -> Generation:
        check_tokens(np.asarray(prompts), self.cfg)
        t0 = time.perf_counter()
        prompts = jax.device_put(np.asarray(prompts, np.int32), self.device)
        first, logits, k, v = self._prefill(placed, prompts)
        first_host = np.asarray(first)
        t1 = time.perf_counter()
        if self.shape.gen_len == 1:
            return Generation(first_host[:, None], np.asarray(logits), t1 - t0, 0.0)
        rest = np.asarray(self._decode(placed, first, k, v)[0])
        t2 = time.perf_counter()
        tokens = np.concatenate([first_host[:, None], rest], 1)
        return Generation(tokens, np.asarray(logits), t1 - t0, t2 - t1)


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


def random_prompts(cfg: ModelConfig, batch: int, prompt_len: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab, (batch, prompt_len), dtype=np.int32)


def default_microbatches(plan: Plan | None, batch: int) -> int:
    """Enough microbatches to fill the pipe (M >= stages) that divide each replica's batch."""
    if plan is None:
        return 1
    per_replica = batch // plan.data_parallel
    fitting = [m for m in range(plan.n_stages, per_replica + 1) if per_replica % m == 0]
    return fitting[0] if fitting else max(per_replica, 1)


def check_mesh(mesh: MeshConfig, needed: int) -> None:
    """The mesh file must describe the devices jax sees; say in one line where they differ."""
    devices = jax.devices()
    platform = devices[0].platform
    if mesh.platform != platform:
        raise ConfigError(
            f"--mesh = {mesh.name!r} describes {mesh.n_devices} {mesh.device_kind} "
            f"({mesh.platform}) but jax sees {len(devices)} {platform} device(s); pick the mesh "
            "file of this machine (cpu16 on a CPU)"
        )
    if len(devices) < needed:
        raise ConfigError(
            f"--mesh = {mesh.name!r}: the plan needs {needed} devices, jax sees {len(devices)} "
            f"{platform} device(s)"
        )


def make_executor(
    method: str,
    cfg: ModelConfig,
    mesh: MeshConfig,
    *,
    batch: int,
    prompt_len: int,
    gen_len: int,
    microbatches: int | None = None,
    choice: PlanChoice = PlanChoice(),
    kernel: KernelChoice = XLA_KERNEL,
):
    """Plan ``method`` on ``mesh``, check the run's shape and the devices, build the executor."""
    plan = plan_for(method, cfg, mesh, choice)
    if microbatches is None:
        microbatches = default_microbatches(plan, batch)
    shape = RunShape(batch, prompt_len, gen_len, microbatches)
    shape.check(cfg, plan.data_parallel if plan else 1)
    if plan is None:
        return ReferenceExecutor(cfg, shape, kernel=kernel)
    check_mesh(mesh, plan.n_devices)
    return PipelineExecutor(cfg, plan, shape, kernel=kernel)


def generate(
    method: str,
    cfg: ModelConfig,
    mesh: MeshConfig,
    *,
    batch: int | None = None,
    prompt_len: int | None = None,
    gen_len: int | None = None,
    microbatches: int | None = None,
    seed: int = 0,
    prompts: np.ndarray | None = None,
    choice: PlanChoice = PlanChoice(),
    params: dict | None = None,
    kernel: KernelChoice = XLA_KERNEL,
    checkpoint: str | None = None,
):
    """Generate with ``method``; returns (tokens [B, gen_len], first-step logits, executor).

    Weights: ``params``, else those saved in ``checkpoint``, else random from ``seed``.
    """
    from jaxpart.model import init_params

    batch = batch or cfg.batch
    if prompts is not None:
        prompts = np.asarray(prompts, np.int32)
        if prompts.ndim == 1:
            prompts = np.broadcast_to(prompts, (batch, prompts.shape[0]))
        check_tokens(prompts, cfg)
        batch, prompt_len = prompts.shape
    prompt_len = prompt_len or cfg.prompt_len
    executor = make_executor(
        method,
        cfg,
        mesh,
        batch=batch,
        prompt_len=prompt_len,
        gen_len=gen_len or cfg.gen_len,
        microbatches=microbatches,
        choice=choice,
        kernel=kernel,
    )
    if prompts is None:
        prompts = random_prompts(cfg, batch, prompt_len, seed)
    if params is None and checkpoint:
        placed = load_checkpoint(executor, checkpoint)
    else:
        placed = executor.place(init_params(cfg, seed) if params is None else params)
    tokens, logits = executor.generate(placed, prompts)
    return tokens, logits, executor


def load_checkpoint(executor, directory: str) -> dict:
    """Trained weights from ``directory``, placed for ``executor``: straight into its shardings
    when its stage layout is the canonical one, else through the host and ``place``."""
    from jaxpart import checkpoint
    from jaxpart.model import init_params

    cfg = executor.cfg
    canonical = jax.eval_shape(lambda: init_params(cfg, 0))
    if isinstance(executor, PipelineExecutor) and executor.canonical_rows:
        target = {k: v for k, v in executor.abstract_inputs()["params"].items() if k != "sizes"}
        params, _, _, _ = checkpoint.restore(directory, cfg, target)
        return {**params, "sizes": executor.place_sizes()}
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params, _, _, _ = checkpoint.restore(
        directory, cfg, checkpoint.abstract_like(canonical, device)
    )
    return executor.place(params)
