"""Synthetic sequence tasks a small model learns in minutes, so that generations can be checked by
eye and by exact match: copy, reverse and add.

A sequence is ``[BOS] question [SEP] answer``; the prompt is everything up to and including SEP,
the answer is what greedy decoding must produce. Symbols are small integers shown as letters
(copy, reverse) or digits (add).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxpart.config import ConfigError

BOS, SEP, PLUS = 1, 2, 3
FIRST_SYMBOL = 4
TASKS = ("copy", "reverse", "add")


@dataclass(frozen=True)
class Task:
    name: str
    length: int = 0  # symbols in the question (copy, reverse: 8) or digits a number (add: 4)
    alphabet: int = 16  # distinct symbols (add: the 10 digits)

    def __post_init__(self):
        if self.name not in TASKS:
            raise ConfigError(f"--task = {self.name!r}: use one of {list(TASKS)}")
        if self.length <= 0:
            object.__setattr__(self, "length", 4 if self.name == "add" else 8)

    @property
    def prompt_len(self) -> int:
        if self.name == "add":
            return 1 + 2 * self.length + 2  # BOS a + b SEP
        return 1 + self.length + 1

    @property
    def answer_len(self) -> int:
        return self.length + 1 if self.name == "add" else self.length

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.answer_len

    def check(self, vocab: int, seq_len: int) -> None:
        symbols = 10 if self.name == "add" else self.alphabet
        if FIRST_SYMBOL + symbols > vocab:
            raise ConfigError(
                f"--task = {self.name!r}: needs a vocab of at least "
                f"{FIRST_SYMBOL + symbols}, the model has {vocab}"
            )
        if self.seq_len > seq_len:
            raise ConfigError(
                f"--task = {self.name!r}: sequences of {self.seq_len} tokens exceed "
                f"the model's seq_len = {seq_len}"
            )

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(prompts [batch, prompt_len], answers [batch, answer_len]), int32."""
        if self.name == "add":
            a = rng.integers(0, 10, (batch, self.length))
            b = rng.integers(0, 10, (batch, self.length))
            answer = _add_digits(a, b)  # least significant digit first, as the inputs
            question = np.concatenate([a, np.full((batch, 1), PLUS - FIRST_SYMBOL), b], axis=1)
        else:
            question = rng.integers(0, self.alphabet, (batch, self.length))
            answer = question if self.name == "copy" else question[:, ::-1]
        prompts = np.concatenate(
            [np.full((batch, 1), BOS), question + FIRST_SYMBOL, np.full((batch, 1), SEP)], axis=1
        )
        return prompts.astype(np.int32), (answer + FIRST_SYMBOL).astype(np.int32)

    def training_batch(self, rng, batch):
        """(tokens [batch, seq_len], loss mask [batch, seq_len - 1]): the loss is on the answer."""
        prompts, answers = self.sample(rng, batch)
        tokens = np.concatenate([prompts, answers], axis=1)
        mask = np.zeros((batch, self.seq_len - 1), np.float32)
        mask[:, self.prompt_len - 1 :] = 1.0  # logits at position i predict token i + 1
        return tokens, mask

    def render(self, tokens) -> str:
        out = []
        for t in np.asarray(tokens).tolist():
            if t == BOS:
                continue
            if t == SEP:
                out.append("=" if self.name == "add" else "->")
            elif t == PLUS and self.name == "add":
                out.append("+")
            elif t >= FIRST_SYMBOL:
                s = t - FIRST_SYMBOL
                out.append(str(s) if self.name == "add" else chr(ord("a") + s % 26))
            else:
                out.append("?")
        return " ".join(out)


def _add_digits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Digit-wise sum of little-endian numbers, with the final carry as an extra digit."""
    batch, n = a.shape
    out = np.zeros((batch, n + 1), np.int64)
    carry = np.zeros(batch, np.int64)
    for i in range(n):
        s = a[:, i] + b[:, i] + carry
        out[:, i], carry = s % 10, s // 10
    out[:, n] = carry
    return out


def exact_match(answers: np.ndarray, completions: np.ndarray) -> float:
    """Fraction of sequences whose completion equals the answer exactly."""
    return float((answers == completions[:, : answers.shape[1]]).all(axis=1).mean())
