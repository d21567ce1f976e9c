"""What every executor shares: the run's shape, a generation's result, the token check and
the ``Executor`` interface."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxpart.config import ConfigError, ModelConfig


@dataclass(frozen=True)
class RunShape:
    """What one generate call runs: batch, prompt and generation lengths, microbatches."""

    batch: int
    prompt_len: int
    gen_len: int  # new tokens per sequence, the prefill's first token included
    microbatches: int

    def check(self, cfg: ModelConfig, replicas: int = 1) -> None:
        for name in ("batch", "prompt_len", "gen_len", "microbatches"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} = {value}: must be >= 1")
        if self.prompt_len + self.gen_len > cfg.seq_len:
            raise ConfigError(
                f"--gen-len = {self.gen_len}: prompt {self.prompt_len} + generation "
                f"{self.gen_len} = {self.prompt_len + self.gen_len} exceeds the model's "
                f"seq_len = {cfg.seq_len} ({cfg.source})"
            )
        if self.batch % (replicas * self.microbatches):
            raise ConfigError(
                f"--batch = {self.batch}: must be divisible by {replicas} data-parallel "
                f"replica(s) x {self.microbatches} microbatches = {replicas * self.microbatches}"
            )


@dataclass(frozen=True)
class Generation:
    tokens: np.ndarray  # [B, gen_len]
    first_logits: np.ndarray  # [B, vocab], f32
    prefill_s: float  # until the first tokens are on the host: the TTFT
    decode_s: float  # the gen_len - 1 decode steps, until the tokens are on the host


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
