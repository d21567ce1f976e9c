"""The reference executor: the whole model on one device, in two jitted programs (prefill, which
also allocates the caches, and a decode loop). The placements' answers are checked against it."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxpart.config import ModelConfig, RunShape
from jaxpart.config.generation import GREEDY, GenerationConfig
from jaxpart.io.weights import LAZY_LEAVES
from jaxpart.model.decoder import empty_cache, leaf_dtype
from jaxpart.model.kernels.backend import AUTO, KernelChoice
from jaxpart.model.layers import arch_of, forward
from jaxpart.model.quant import cache_dtype
from jaxpart.runtime.executors.base import DecodeState, Executor, Forced
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
        """The weights on the device, each leaf in its dtype (``decoder.leaf_dtype``: the
        model's, FP8 matrices in e4m3 and their scales in f32)."""

        def whole(path, a):
            dtype = leaf_dtype(self.cfg, getattr(path[-1], "key", ""))
            return jnp.asarray(a.whole() if isinstance(a, LAZY_LEAVES) else a, dtype)

        return jax.device_put(jax.tree_util.tree_map_with_path(whole, params), self.device)

    def _prefill_fn(self, params, prompts, lens):
        k, v = empty_cache(self.cfg, prompts.shape[0], cache_dtype(self.cfg.kv_dtype))
        logits, k, v = forward(params, prompts, k, v, 0, self.kernel, arch=self.arch, last=lens - 1)
        tok = choose(logits, jnp.arange(prompts.shape[0]), 0, self.generation)
        return tok, logits, k, v

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
        _, done, k, v, out = jax.lax.fori_loop(0, steps, step, (tok, done, k, v, out))
        return out.T, done, k, v

    def _put(self, x):
        return jax.device_put(x, self.device)

    def prefill_padded(self, placed, prompts: np.ndarray, lens: np.ndarray) -> DecodeState:
        """The prefill program on prompts ``[B, T]`` padded on the right to ``lens [B]``: the
        caches it makes and the first tokens (on the host); the logits stay on the device."""
        lens_on_device = self._put(np.asarray(lens, np.int32))
        first, logits, k, v = self._prefill(
            placed, self._put(np.asarray(prompts, np.int32)), lens_on_device
        )
        return DecodeState.after_prefill(
            placed,
            (k, v),
            lens_on_device,
            lens,
            prompts.shape[1],
            np.asarray(first),
            logits,
            self.generation.stop_tokens,
        )

    def decode(self, state: DecodeState, n: int) -> tuple[DecodeState, np.ndarray]:
        """``n`` decode steps in one call of the decode loop (compiled on first use for each
        n): the next state and the tokens ``[B, n]``."""
        self.check_decode(state, n)
        key = (n, state.ragged)
        if key not in self._decodes:
            fn = functools.partial(self._decode_fn, steps=n, ragged=state.ragged)
            self._decodes[key] = jax.jit(fn, donate_argnums=(3, 4))
        out, done, k, v = self._decodes[key](
            state.placed,
            self._put(np.asarray(state.last_tokens, np.int32)),
            self._put(np.asarray(state.done, bool)),
            *state.caches,
            state.prompt_lens,
            state.decode_steps,
        )
        tokens = np.asarray(out)
        return state.advanced((k, v), tokens, np.asarray(done)), tokens

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
        tokens = np.asarray(tokens, np.int32)
        state = self.prefill(placed, prompts)
        logits = np.asarray(state.first_logits)
        rows = np.arange(len(tokens))
        own, top, at = (
            state.first_tokens[:, None],
            logits.max(-1)[:, None],
            logits[rows, tokens[:, 0]],
        )
        at = at[:, None]
        if self.shape.gen_len > 1:
            if self._forced is None:
                self._forced = jax.jit(self._forced_fn)
            given = self._put(tokens[:, 0])
            forced = self._put(np.ascontiguousarray(tokens[:, 1:].T))
            rest = [np.asarray(a) for a in self._forced(placed, given, forced, *state.caches)]
            own, top, at = (
                np.concatenate(p, axis=1) for p in zip((own, top, at), rest, strict=True)
            )
        return Forced(own, top, at, logits.std(axis=-1))
