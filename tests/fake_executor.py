"""A fake executor for tests: the ``Executor`` interface (place, prefill -> DecodeState, decode)
with trivial numpy maths and nothing compiled, so that the base class's timing, chunking, early
stop and streaming can be checked in milliseconds.

Row i's first token is the sum of its prompt, and the token at index t after a token x is
``(3 x + i + t) % vocab``: it depends on the row and the token index, so a chunk decoded from
the wrong step or row shows. The "cache" records the token fed at each position, so a row
decoded at the wrong position shows too. A fake clock advances by ``PREFILL_S`` a prefill and
``DECODE_S`` a decode call.
"""

from __future__ import annotations

import numpy as np

from jaxpart.config import ModelConfig, RunShape, load_model
from jaxpart.config.generation import GREEDY, GenerationConfig
from jaxpart.runtime.executors.base import DecodeState, Executor

MODEL = load_model("dense16-tiny")  # only its vocab is used
PREFILL_S = 5.0
DECODE_S = 1.0
EMPTY = -1  # a cache position nothing was written to


def next_token(last: np.ndarray, rows: np.ndarray, index: int, vocab: int) -> np.ndarray:
    """The fake model: the token at ``index`` of each row, after its ``last`` token."""
    return ((3 * last + rows + index) % vocab).astype(np.int32)


def expected_tokens(
    prompts: list[list[int]], gen_len: int, g: GenerationConfig, vocab: int
) -> np.ndarray:
    """What generation must give, one row and one token at a time (no chunks, no state)."""
    out = np.full((len(prompts), gen_len), g.pad_token, np.int32)
    for i, prompt in enumerate(prompts):
        token = sum(prompt) % vocab
        for t in range(gen_len):
            if t:
                token = int(next_token(np.int32(token), np.int32(i), t, vocab))
            out[i, t] = token
            if token in g.stop_tokens:
                break
    return out


class FakeExecutor(Executor):
    """The executor interface in numpy; it records each decode call's ``n`` in ``calls``."""

    def __init__(
        self,
        shape: RunShape,
        generation: GenerationConfig = GREEDY,
        cfg: ModelConfig | None = None,
    ):
        self.cfg = cfg or MODEL
        self.shape, self.generation = shape, generation
        self.calls: list[int] = []
        self.prefills = 0
        self.clock = 0.0
        self.last_state: DecodeState | None = None

    def now(self) -> float:
        return self.clock

    def place(self, params: dict) -> dict:
        return {"placed": params}

    def prefill_padded(self, placed, prompts: np.ndarray, lens: np.ndarray) -> DecodeState:
        self.prefills += 1
        self.clock += PREFILL_S
        b = len(prompts)
        positions = np.full((b, prompts.shape[1] + self.shape.gen_len), EMPTY, np.int32)
        valid = np.arange(prompts.shape[1]) < lens[:, None]
        first = (np.where(valid, prompts, 0).sum(axis=1) % self.cfg.vocab).astype(np.int32)
        positions[:, : prompts.shape[1]] = np.where(valid, prompts, EMPTY)
        logits = np.zeros((b, self.cfg.vocab), np.float32)
        logits[np.arange(b), first] = 1.0
        state = DecodeState.after_prefill(
            placed,
            (positions, None),
            np.asarray(lens, np.int32),
            lens,
            prompts.shape[1],
            first,
            logits,
            self.generation.stop_tokens,
        )
        self.last_state = state
        return state

    def decode(self, state: DecodeState, n: int) -> tuple[DecodeState, np.ndarray]:
        self.check_decode(state, n)
        self.calls.append(n)
        self.clock += DECODE_S
        g, rows = self.generation, np.arange(len(state.last_tokens))
        positions = state.caches[0].copy()  # a new state; the old one stays as it was
        token, done = state.last_tokens, state.done.copy()
        out = np.zeros((len(rows), n), np.int32)
        for k in range(n):
            positions[rows, state.prompt_lens + state.decode_steps + k] = token
            new = next_token(token, rows, state.generated + k, self.cfg.vocab)
            token = np.where(done, g.pad_token, new).astype(np.int32)
            done |= np.isin(token, g.stop_tokens)
            out[:, k] = token
        state = state.advanced((positions, None), out, done)
        self.last_state = state
        return state, out
