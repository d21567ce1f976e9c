"""Generation by any method on the same weights and prompts: builds the executor of the
single-device reference, the TP x PP baseline or the layer-wise plan, and runs it through the
executors' one timed loop (``Executor.timed_generate``: prefill, then decode in chunks), the
path the CLI and ``measure.compare`` take too."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxpart.config import ConfigError, MeshConfig, ModelConfig, RunShape
from jaxpart.config.generation import GREEDY, GenerationConfig
from jaxpart.config.quant import FP8
from jaxpart.model.kernels.backend import AUTO, KernelChoice
from jaxpart.planning.placement import (
    DEFAULT_CHOICE,
    PlanChoice,
    fill_replicas,
    plan_for,
    resolved,
)
from jaxpart.runtime.executors import PipelineExecutor, ReferenceExecutor, check_tokens
from jaxpart.runtime.executors.base import Generation, padded_prompts


def hf_weights_folder(cfg: ModelConfig) -> Path | None:
    """The Hugging Face folder a model was read from, when it holds safetensors weights."""
    from jaxpart.io.weights import weights_file

    folder = cfg.hf_folder
    if folder is None:
        return None
    return folder if weights_file(folder) is not None else None


def model_params(cfg: ModelConfig, seed: int) -> dict:
    """The model's weights: its Hugging Face folder's (read lazily, a block at a time, as they
    are placed), else random from ``seed``."""
    from jaxpart.model.decoder import abstract_params, init_params

    folder = hf_weights_folder(cfg)
    if folder is None:
        return init_params(cfg, seed)
    from jaxpart.io.weights import lazy_hf_params

    params, _ = lazy_hf_params(folder, cfg, abstract_params(cfg))
    return params


def checkpoint_reads(params: dict) -> tuple[int, int] | None:
    """(bytes this process has read, bytes in all) of the Hugging Face checkpoint the weights
    come from (None: not one)."""
    ckpt = getattr(params.get("embed"), "ckpt", None)
    return None if ckpt is None else (ckpt.bytes_read, ckpt.total_bytes())


def describe_weights(cfg: ModelConfig, seed: int, checkpoint: str | None = None) -> str:
    if checkpoint:
        return f"checkpoint {checkpoint}"
    folder = hf_weights_folder(cfg)
    return f"{folder} (safetensors)" if folder else f"random, seed {seed}"


def random_prompts(cfg: ModelConfig, shape: RunShape, seed: int) -> np.ndarray:
    """``shape.batch`` prompts of ``shape.prompt_len`` random token ids, from ``seed``."""
    size = (shape.batch, shape.prompt_len)
    return np.random.default_rng(seed).integers(0, cfg.vocab, size, dtype=np.int32)


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
    if platform == "gpu" and mesh.device_kind != devices[0].device_kind:
        raise ConfigError(
            f"--mesh = {mesh.name!r} describes {mesh.device_kind!r} devices but jax sees "
            f"{devices[0].device_kind!r}; pick or write the mesh file of this machine"
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
    shape: RunShape,
    *,
    choice: PlanChoice = DEFAULT_CHOICE,
    kernel: KernelChoice = AUTO,
    generation: GenerationConfig = GREEDY,
):
    """Plan ``method`` on ``mesh`` for ``shape``, settle its microbatches, check the run's shape
    and the devices, build the executor."""
    for field in ("weight_dtype", "kv_dtype"):
        if getattr(cfg, field) not in (cfg.dtype, FP8):
            raise ConfigError(
                f"{cfg.source}: field '{field}' = {getattr(cfg, field)!r}: running needs it equal "
                f"to dtype = {cfg.dtype!r} or {FP8!r}; plan, simulate and verify take it as it is"
            )
    shape.check(cfg)
    plan = fill_replicas(plan_for(method, cfg, mesh, shape, choice), shape)
    shape = resolved(method, plan, shape, choice)
    if plan is None:
        return ReferenceExecutor(cfg, shape, kernel=kernel, generation=generation)
    check_mesh(mesh, plan.n_devices)
    return PipelineExecutor(cfg, plan, shape, kernel=kernel, generation=generation)


class Generated(tuple):
    """What ``generate`` returns: it unpacks as (tokens [B, gen_len], first-step logits,
    executor); ``.lengths`` and ``.generation`` give each sequence's length and the timings."""

    generation: Generation

    def __new__(cls, result: Generation, executor):
        out = super().__new__(cls, (result.tokens, result.first_logits, executor))
        out.generation = result
        return out

    @property
    def lengths(self) -> np.ndarray:
        return self.generation.lengths


def generate(
    method: str,
    cfg: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    *,
    seed: int = 0,
    prompts=None,
    choice: PlanChoice = DEFAULT_CHOICE,
    params: dict | None = None,
    kernel: KernelChoice = AUTO,
    checkpoint: str | None = None,
    generation: GenerationConfig = GREEDY,
    on_tokens=None,
) -> Generated:
    """Generate with ``method``; returns (tokens [B, gen_len], first-step logits, executor), with
    ``.lengths`` (each sequence's tokens up to and including its stop token).

    ``shape``: the run's batch, prompt and generation lengths and microbatches. Prompts:
    ``[B, T]`` token ids, one prompt ``[T]`` for every one of ``shape.batch`` sequences, or a
    list of token-id lists of different lengths (padded on the right; each row attends and
    decodes at its own positions, so a sequence's tokens are those it gets alone); given
    prompts set the batch and prompt length. Default: random from ``seed``.
    ``generation``: sampling, stop tokens and ``max_new_tokens`` (else ``shape.gen_len``).
    ``on_tokens(new [B, n])`` is called with each chunk of tokens as it is made (the first
    token, then each decode call's; see ``GenerationConfig.chunk``).

    Weights: ``params``, else those saved in ``checkpoint``, else the model's Hugging Face
    folder's, else random from ``seed``.
    """
    if prompts is not None:
        prompts = broadcast_prompt(prompts, shape.batch)
        padded, _ = padded_prompts(prompts)
        check_tokens(padded, cfg)  # bad input before any planning or placing
        shape = shape.replace(batch=padded.shape[0], prompt_len=padded.shape[1])
    if generation.max_new_tokens:
        shape = shape.replace(gen_len=generation.max_new_tokens)
    generation.check_vocab(cfg.vocab)
    executor = make_executor(
        method, cfg, mesh, shape, choice=choice, kernel=kernel, generation=generation
    )
    if prompts is None:
        prompts = random_prompts(cfg, shape, seed)
    if params is None and checkpoint:
        placed = load_checkpoint(executor, checkpoint)
    else:
        params = model_params(cfg, seed) if params is None else params
        placed = executor.place(params)
        executor.checkpoint_reads = checkpoint_reads(params)
        executor.weight_notes = tuple(
            getattr(getattr(params.get("embed"), "ckpt", None), "notes", ())
        )
    executor.weights_held = executor.held_bytes(placed)
    return Generated(executor.timed_generate(placed, prompts, on_tokens), executor)


def broadcast_prompt(prompts, batch: int):
    """One prompt (a flat list or a 1-D array) as ``batch`` identical rows; rows (``[B, T]`` or
    a list of token-id lists) as they are."""
    one = prompts.ndim == 1 if isinstance(prompts, np.ndarray) else np.ndim(prompts[0]) == 0
    if one:
        return np.broadcast_to(np.asarray(prompts, np.int32), (batch, len(prompts)))
    return prompts


def load_checkpoint(executor, directory: str) -> dict:
    """Trained weights from ``directory``, placed for ``executor``: straight into its shardings
    when its stage layout is the canonical one, else through the host and ``place``."""
    from jaxpart.io import checkpoint
    from jaxpart.model.decoder import abstract_params

    cfg = executor.cfg
    canonical = abstract_params(cfg)
    if isinstance(executor, PipelineExecutor) and executor.canonical_rows:
        target = {k: v for k, v in executor.abstract_inputs()["params"].items() if k != "sizes"}
        params, _, _, _ = checkpoint.restore(directory, cfg, target)
        return {**params, "sizes": executor.place_sizes()}
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params, _, _, _ = checkpoint.restore(
        directory, cfg, checkpoint.abstract_like(canonical, device)
    )
    return executor.place(params)
