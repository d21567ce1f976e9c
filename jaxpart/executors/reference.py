"""The reference executor: the whole model on one device, in two jitted programs (prefill, which
also allocates the caches, and a decode loop). The placements' answers are checked against it."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.config import ModelConfig
from jaxpart.executors.base import Executor, Forced, Generation, RunShape, check_tokens
from jaxpart.kernels.backend import AUTO, KernelChoice
from jaxpart.layers import arch_of, forward, jnp_dtype
from jaxpart.model import empty_cache
from jaxpart.weights import LazyLeaf


class ReferenceExecutor(Executor):
    """The whole model on one device; the executors' answers are checked against it."""

    def __init__(self, cfg: ModelConfig, shape: RunShape, device=None, kernel: KernelChoice = AUTO):
        shape.check(cfg)
        self.cfg, self.shape, self.kernel = cfg, shape, kernel
        self.arch = arch_of(cfg)
        self.device = device or jax.local_devices()[0]  # each process runs its own
        self.plan = None
        self._prefill = jax.jit(self._prefill_fn)
        self._decode = jax.jit(self._decode_fn, donate_argnums=(2, 3))
        self._forced = None  # built on first use (compare in bf16)

    def place(self, params: dict) -> dict:
        """The weights on the device, in the model's dtype."""
        dtype = jnp_dtype(self.cfg.dtype)

        def whole(a):
            return jnp.asarray(a.whole() if isinstance(a, LazyLeaf) else a, dtype)

        return jax.device_put(jax.tree.map(whole, params), self.device)

    def _prefill_fn(self, params, prompts):
        k, v = empty_cache(self.cfg, prompts.shape[0], params["embed"].dtype)
        logits, k, v = forward(params, prompts, k, v, 0, self.kernel, arch=self.arch)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits, k, v

    def _decode_fn(self, params, first, k, v):
        steps, start = self.shape.gen_len - 1, self.shape.prompt_len

        def step(i, carry):
            tok, k, v, out = carry
            logits, k, v = forward(
                params, tok[:, None], k, v, start + i, self.kernel, arch=self.arch
            )
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return tok, k, v, out.at[i].set(tok)

        out = jnp.zeros((steps, first.shape[0]), jnp.int32)
        _, k, v, out = jax.lax.fori_loop(0, steps, step, (first, k, v, out))
        return out.T, k, v

    def _forced_fn(self, params, first, forced, k, v):
        """Decode fed ``forced [D, B]``: own choices, top logits, logits at the given tokens."""
        start = self.shape.prompt_len

        def step(i, carry):
            tok, k, v, out, top, at = carry
            logits, k, v = forward(
                params, tok[:, None], k, v, start + i, self.kernel, arch=self.arch
            )
            own = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            given = jnp.take_along_axis(logits, forced[i][:, None], axis=1)[:, 0]
            out, top = out.at[i].set(own), top.at[i].set(logits.max(axis=-1))
            return forced[i], k, v, out, top, at.at[i].set(given)

        zeros = jnp.zeros(forced.shape, jnp.float32)
        init = (first, k, v, jnp.zeros(forced.shape, jnp.int32), zeros, zeros)
        _, _, _, out, top, at = jax.lax.fori_loop(0, forced.shape[0], step, init)
        return out.T, top.T, at.T

    def teacher_forced(self, placed, prompts, tokens) -> Forced:
        """Feed ``tokens [B, gen_len]`` instead of its own, as PipelineExecutor.teacher_forced."""
        check_tokens(np.asarray(prompts), self.cfg)
        tokens = np.asarray(tokens, np.int32)
        prompts = jax.device_put(np.asarray(prompts, np.int32), self.device)
        first, logits, k, v = self._prefill(placed, prompts)
        logits = np.asarray(logits)
        rows = np.arange(len(tokens))
        own, top, at = (
            np.asarray(first)[:, None],
            logits.max(-1)[:, None],
            logits[rows, tokens[:, 0]],
        )
        at = at[:, None]
        if self.shape.gen_len > 1:
            if self._forced is None:
                self._forced = jax.jit(self._forced_fn)
            given = jax.device_put(tokens[:, 0], self.device)
            forced = jax.device_put(np.ascontiguousarray(tokens[:, 1:].T), self.device)
            rest = [np.asarray(a) for a in self._forced(placed, given, forced, k, v)]
            own, top, at = (
                np.concatenate(p, axis=1) for p in zip((own, top, at), rest, strict=True)
            )
        return Forced(own, top, at)

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
