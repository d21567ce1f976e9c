"""The reference executor: the whole model on one device, in two jitted programs (prefill, which
also allocates the caches, and a decode loop). The placements' answers are checked against it."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.config import ModelConfig, RunShape
from jaxpart.config.generation import GREEDY, GenerationConfig
from jaxpart.io.weights import LazyLeaf
from jaxpart.model.decoder import empty_cache
from jaxpart.model.kernels.backend import AUTO, KernelChoice
from jaxpart.model.layers import arch_of, forward, jnp_dtype
from jaxpart.runtime.executors.base import (
    Executor,
    Forced,
    Generation,
    check_tokens,
    decode_in_chunks,
    lengths_of,
    padded_prompts,
)
from jaxpart.runtime.sampling import choose, stopped


class ReferenceExecutor(Executor):
    """The whole model on one device; the executors' answers are checked against it."""

    def __init__(
        self,
        cfg: ModelConfig,
        shape: RunShape,
        device=None,
        kernel: KernelChoice = AUTO,
        generation: GenerationConfig = GREEDY,
    ):
        shape.check(cfg)
        self.cfg, self.shape, self.kernel, self.generation = cfg, shape, kernel, generation
        self.arch = arch_of(cfg)
        self.device = device or jax.local_devices()[0]  # each process runs its own
        self.plan = None
        self._prefill = jax.jit(self._prefill_fn)
        self._decodes = {}  # (decode steps per call, ragged prompts) -> its compiled program
        self._forced = None  # built on first use (compare in bf16)

    def place(self, params: dict) -> dict:
        """The weights on the device, in the model's dtype."""
        dtype = jnp_dtype(self.cfg.dtype)

        def whole(a):
            return jnp.asarray(a.whole() if isinstance(a, LazyLeaf) else a, dtype)

        return jax.device_put(jax.tree.map(whole, params), self.device)

    def _prefill_fn(self, params, prompts, lens):
        k, v = empty_cache(self.cfg, prompts.shape[0], params["embed"].dtype)
        logits, k, v = forward(params, prompts, k, v, 0, self.kernel, arch=self.arch, last=lens - 1)
        tok = choose(logits, jnp.arange(prompts.shape[0]), 0, self.generation)
        return tok, stopped(tok, self.generation), logits, k, v

    def _decode_fn(self, params, tok, done, k, v, lens, start, *, steps: int, ragged: bool):
        """``steps`` decode steps from token index ``start``: each row at position
        lens + start + i (``ragged``; else all at prompt_len + start + i, one cache write for
        all rows); a stopped row emits the pad token."""
        g, rows = self.generation, jnp.arange(tok.shape[0])
        base = lens if ragged else self.shape.prompt_len

        def step(i, carry):
            tok, done, k, v, out = carry
            pos = base + start + i
            logits, k, v = forward(params, tok[:, None], k, v, pos, self.kernel, arch=self.arch)
            new = jnp.where(done, g.pad_token, choose(logits, rows, start + i + 1, g))
            return new, done | stopped(new, g), k, v, out.at[i].set(new)

        out = jnp.zeros((steps, tok.shape[0]), jnp.int32)
        tok, done, k, v, out = jax.lax.fori_loop(0, steps, step, (tok, done, k, v, out))
        return out.T, tok, done, k, v

    def _decode_chunk(self, state, tok, done, start: int, steps: int):
        key = (steps, state["ragged"])
        if key not in self._decodes:
            fn = functools.partial(self._decode_fn, steps=steps, ragged=state["ragged"])
            self._decodes[key] = jax.jit(fn, donate_argnums=(3, 4))
        out, tok, done, k, v = self._decodes[key](
            state["params"], tok, jnp.asarray(done), state["k"], state["v"], state["lens"], start
        )
        state["k"], state["v"] = k, v
        return np.asarray(out), tok, np.asarray(done)

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
        prompts, lens = padded_prompts(prompts)
        put = functools.partial(jax.device_put, device=self.device)
        first, _, logits, k, v = self._prefill(placed, put(prompts), put(lens))
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
            given = put(tokens[:, 0])
            forced = put(np.ascontiguousarray(tokens[:, 1:].T))
            rest = [np.asarray(a) for a in self._forced(placed, given, forced, k, v)]
            own, top, at = (
                np.concatenate(p, axis=1) for p in zip((own, top, at), rest, strict=True)
            )
        return Forced(own, top, at)

    def timed_generate(self, placed, prompts, on_tokens=None) -> Generation:
        """Tokens, timed: prefill until the first tokens are on the host, then decode (in
        chunks when the generation config asks, handing each to ``on_tokens``)."""
        prompts, lens = padded_prompts(prompts)
        check_tokens(prompts, self.cfg)
        g = self.generation
        t0 = time.perf_counter()
        put = functools.partial(jax.device_put, device=self.device)
        lens_dev = put(lens)
        first, done, logits, k, v = self._prefill(placed, put(prompts), lens_dev)
        first_host = np.asarray(first)
        t1 = time.perf_counter()
        if on_tokens is not None:
            on_tokens(first_host[:, None])
        steps = self.shape.gen_len - 1
        state = {"params": placed, "k": k, "v": v, "lens": lens_dev, "done": np.asarray(done)}
        state["ragged"] = bool(np.any(lens != prompts.shape[1]))
        per_call = g.steps_per_call(steps, on_tokens is not None) if steps else 1
        rest, ran, calls = decode_in_chunks(self, state, steps, per_call, on_tokens, first)
        t2 = time.perf_counter()
        tokens = np.full((len(first_host), self.shape.gen_len), g.pad_token, np.int32)
        tokens[:, 0] = first_host
        tokens[:, 1 : 1 + ran] = rest
        return Generation(
            tokens,
            np.asarray(logits),
            t1 - t0,
            t2 - t1 if ran else 0.0,
            lengths_of(tokens, g.stop_tokens),
            ran,
            calls,
        )
