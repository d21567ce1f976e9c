"""What every executor shares: a generation's result, the token check and the ``Executor``
interface."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxpart.config import ConfigError, ModelConfig


@dataclass(frozen=True)
class Generation:
    tokens: np.ndarray  # [B, gen_len]; after a sequence's stop token, the pad token
    first_logits: np.ndarray  # [B, vocab], f32
    prefill_s: float  # until the first tokens are on the host: the TTFT
    decode_s: float  # the decode steps run, until their tokens are on the host
    lengths: np.ndarray | None = None  # [B] tokens each sequence generated, its stop included
    decode_steps: int = 0  # decode steps run (fewer than gen_len - 1 if all stopped early)
    decode_calls: int = 0  # compiled decode calls made

    def __post_init__(self) -> None:
        if self.lengths is None:
            full = np.full(self.tokens.shape[0], self.tokens.shape[1], np.int32)
            object.__setattr__(self, "lengths", full)
            object.__setattr__(self, "decode_steps", self.tokens.shape[1] - 1)

    @property
    def decode_tokens(self) -> int:
        """Tokens the decode steps generated (padding after a stop not counted)."""
        return int(np.sum(self.lengths - 1))


def lengths_of(tokens: np.ndarray, stop_tokens: tuple[int, ...]) -> np.ndarray:
    """Each sequence's length: up to and including its first stop token, else all of it."""
    n = tokens.shape[1]
    if not stop_tokens:
        return np.full(tokens.shape[0], n, np.int32)
    hit = np.isin(tokens, stop_tokens)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, n)
    return first.astype(np.int32)


def padded_prompts(prompts) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as ``[B, T]`` int32 padded on the right with 0, and each one's length ``[B]``:
    from a ``[B, T]`` array (all of length T) or a list of token-id lists."""
    if isinstance(prompts, np.ndarray) or (
        prompts and not isinstance(prompts[0], list | tuple | np.ndarray)
    ):
        arr = np.asarray(prompts, np.int32)
        if arr.ndim == 2:
            return arr, np.full(arr.shape[0], arr.shape[1], np.int32)
    rows = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ConfigError("prompts: every sequence needs at least one token")
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.asarray([len(r) for r in rows], np.int32)


def decode_in_chunks(executor, state, steps: int, per_call: int, on_tokens, first) -> tuple:
    """Run ``steps`` decode steps ``per_call`` at a time through ``executor._decode_chunk``,
    stopping once every sequence has stopped; hand each chunk to ``on_tokens``. Returns the
    decoded tokens ``[B, steps run]``, the steps run and the calls made."""
    chunks, done_steps, calls = [], 0, 0
    tok, done = first, state["done"]
    while done_steps < steps and not np.all(done):
        n = min(per_call, steps - done_steps)
        out, tok, done = executor._decode_chunk(state, tok, done, done_steps, n)
        chunks.append(out)
        done_steps, calls = done_steps + n, calls + 1
        if on_tokens is not None:
            on_tokens(out)
    if not chunks:
        return np.zeros((len(first), 0), np.int32), 0, 0
    return np.concatenate(chunks, axis=1), done_steps, calls


@dataclass(frozen=True)
class Forced:
    """A teacher-forced run: for every sequence and step, fed the reference's tokens, what this
    executor would have chosen, its top logit, and its logit at the reference's token."""

    tokens: np.ndarray  # [B, gen_len] int32
    top_logit: np.ndarray  # [B, gen_len] f32
    given_logit: np.ndarray  # [B, gen_len] f32


def check_tokens(tokens: np.ndarray, cfg: ModelConfig) -> None:
    bad = np.argwhere((tokens < 0) | (tokens >= cfg.vocab))
    if bad.size:
        i, j = bad[0]
        raise ConfigError(
            f"prompt token {int(tokens[i, j])} at [{i}, {j}] is outside the vocab [0, {cfg.vocab})"
        )


class Executor:
    """What every executor offers: ``place(params)`` and ``timed_generate(placed, prompts)``."""

    # (bytes read, bytes in all) of the Hugging Face checkpoint this process placed weights from.
    checkpoint_reads: tuple[int, int] | None = None

    def generate(self, placed, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Greedy tokens ``[B, gen_len]`` and the first step's logits ``[B, vocab]``."""
        g = self.timed_generate(placed, prompts)
        return g.tokens, g.first_logits
