"""What every executor shares: the ``Executor`` interface (``place``, ``prefill -> DecodeState``,
``decode(state, n)``), the explicit decode state passed in and out, a generation's result, and
the timed generation loop written once on top of them."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxpart.config import ConfigError, ModelConfig, RunShape
from jaxpart.config.generation import GenerationConfig

if TYPE_CHECKING:
    from jaxpart.planning.plan import Plan


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


@dataclass(frozen=True)
class Forced:
    """A teacher-forced run: for every sequence and step, fed the reference's tokens, what this
    executor would have chosen, its top logit, and its logit at the reference's token."""

    tokens: np.ndarray  # [B, gen_len] int32
    top_logit: np.ndarray  # [B, gen_len] f32
    given_logit: np.ndarray  # [B, gen_len] f32
    spread: np.ndarray | None = None  # [B] f32: the std of each sequence's first-step logits


def check_tokens(tokens: np.ndarray, cfg: ModelConfig) -> None:
    bad = np.argwhere((tokens < 0) | (tokens >= cfg.vocab))
    if bad.size:
        i, j = bad[0]
        raise ConfigError(
            f"prompt token {int(tokens[i, j])} at [{i}, {j}] is outside the vocab [0, {cfg.vocab})"
        )


@dataclass(frozen=True, eq=False)
class DecodeState:
    """Everything decoding needs between two calls, passed in and out explicitly (as in
    JetStream's engine API): ``prefill`` makes one and each ``decode(state, n)`` returns the
    next. The caches are donated to the decode program, so decode from the state ``decode``
    returned, never twice from the same one."""

    placed: Any  # the executor's placed weights
    caches: tuple[Any, Any]  # the K and V caches in the executor's layout (device arrays)
    prompt_lens: Any  # [B] each row's prompt length, as the executor's programs take it
    ragged: bool  # prompts of different lengths: each row decodes at its own positions
    last_tokens: np.ndarray  # [B] int32: each row's newest token, the next step's input
    done: np.ndarray  # [B] bool: the row has emitted a stop token and now emits the pad token
    generated: int  # tokens generated per row so far, the prefill's first included
    first_tokens: np.ndarray  # [B] int32: the prefill's tokens
    first_logits: Any  # [B, vocab] f32: the prefill's logits (may still be on the devices)

    @classmethod
    def after_prefill(
        cls, placed, caches, prompt_lens, lens: np.ndarray, width: int, first, logits, stop_tokens
    ) -> DecodeState:
        """The state a prefill leaves: ``first [B]`` tokens chosen (on the host), ``lens`` the
        prompts' lengths in rows ``width`` wide, a row done if its first token is a stop."""
        first = np.asarray(first, np.int32)
        return cls(
            placed=placed,
            caches=caches,
            prompt_lens=prompt_lens,
            ragged=bool(np.any(lens != width)),
            last_tokens=first,
            done=np.isin(first, stop_tokens),
            generated=1,
            first_tokens=first,
            first_logits=logits,
        )

    @property
    def decode_steps(self) -> int:
        """Decode steps run so far; the next one chooses token index ``generated``."""
        return self.generated - 1

    def advanced(
        self, caches: tuple[Any, Any], tokens: np.ndarray, done: np.ndarray
    ) -> DecodeState:
        """This state after a decode call that made ``tokens [B, n]`` and left ``caches``."""
        return replace(
            self,
            caches=caches,
            last_tokens=np.asarray(tokens[:, -1], np.int32),
            done=np.asarray(done, bool),
            generated=self.generated + tokens.shape[1],
        )


class Executor(abc.ABC):
    """What every executor offers, in the shape of a serving engine's interface:

    - ``place(params) -> placed``: the weights on the executor's devices;
    - ``prefill(placed, prompts) -> DecodeState``: the prompts run, the first tokens chosen;
    - ``decode(state, n) -> (state, tokens [B, n])``: n more tokens, one compiled program per n.

    Timing, chunking, early stop and streaming are written here once, on top of those
    (``timed_generate``), so that every placement is measured by the same code. An executor
    supplies ``place``, ``prefill_padded`` and ``decode``, and the attributes ``cfg``,
    ``shape``, ``generation`` and ``plan`` (None: one device).
    """

    cfg: ModelConfig
    shape: RunShape
    generation: GenerationConfig
    plan: Plan | None = None
    # (bytes read, bytes in all) of the Hugging Face checkpoint this process placed weights from.
    checkpoint_reads: tuple[int, int] | None = None
    weight_notes: tuple[str, ...] = ()  # what was made of the weights as they were read
    # bytes of the placed weights on this process's devices, by kind (``held_bytes``)
    weights_held: dict[str, int] | None = None

    @staticmethod
    def held_bytes(placed) -> dict[str, int]:
        """Bytes of every shard of the placed weights on this process's devices (copies
        included): the layers' matrices, FP8 scales, and the rest (embedding, head, norms)."""
        import jax

        from jaxpart.config.quant import FP8_MATRICES

        out = {"matrices": 0, "scales": 0, "rest": 0}
        for path, leaf in jax.tree_util.tree_flatten_with_path(placed)[0]:
            name = str(getattr(path[-1], "key", ""))
            kind = "scales" if "scale" in name else "matrices" if name in FP8_MATRICES else "rest"
            out[kind] += sum(shard.data.nbytes for shard in leaf.addressable_shards)
        return out

    @abc.abstractmethod
    def place(self, params: dict) -> Any:
        """The canonical weights placed on the executor's devices."""

    @abc.abstractmethod
    def prefill_padded(self, placed, prompts: np.ndarray, lens: np.ndarray) -> DecodeState:
        """``prefill`` of prompts already padded on the right to ``[B, T]`` and checked, row i
        of length ``lens[i]``. The state's first tokens are on the host when it returns: the
        time to the first token ends there."""

    @abc.abstractmethod
    def decode(self, state: DecodeState, n: int) -> tuple[DecodeState, np.ndarray]:
        """``n`` decode steps from ``state``: the next state and the tokens ``[B, n]`` on the
        host (a stopped row's are the pad token)."""

    def prompt_rows(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Prompts (``[B, T]`` or a list of token-id lists) padded on the right and checked
        against the vocab, with each one's length."""
        rows, lens = padded_prompts(prompts)
        check_tokens(rows, self.cfg)
        return rows, lens

    def prefill(self, placed, prompts) -> DecodeState:
        """Run ``prompts`` (``[B, T]`` or a list of token-id lists of different lengths, padded
        on the right): the caches and the first tokens, as the state decoding starts from."""
        return self.prefill_padded(placed, *self.prompt_rows(prompts))

    def check_decode(self, state: DecodeState, n: int) -> None:
        """``n`` more tokens must fit the run's ``gen_len``: the run shape the executor was built
        for, and whose context was checked against the model's."""
        left = self.shape.gen_len - state.generated
        if not 1 <= n <= left:
            raise ValueError(
                f"decode {n=}: {state.generated} of gen_len = {self.shape.gen_len} tokens are "
                f"made, so 1 to {left} more fit"
            )

    def timed_generate(self, placed, prompts, on_tokens=None) -> Generation:
        """Tokens, timed: prefill until the first tokens are on the host (the TTFT), then decode
        ``GenerationConfig.steps_per_call`` steps a call until ``gen_len`` tokens are made or
        every sequence has stopped. ``on_tokens(new [B, n])`` gets the first tokens, then each
        call's, in order (its time counts in the decode time)."""
        rows, lens = self.prompt_rows(prompts)
        g, gen_len = self.generation, self.shape.gen_len
        t0 = time.perf_counter()
        state = self.prefill_padded(placed, rows, lens)
        t1 = time.perf_counter()
        if on_tokens is not None:
            on_tokens(state.first_tokens[:, None])
        tokens = np.full((len(rows), gen_len), g.pad_token, np.int32)
        tokens[:, 0] = state.first_tokens
        steps = gen_len - 1
        per_call = g.steps_per_call(steps, on_tokens is not None) if steps else 1
        calls = 0
        while state.generated < gen_len and not np.all(state.done):
            n = min(per_call, gen_len - state.generated)
            state, new = self.decode(state, n)
            tokens[:, state.generated - n : state.generated] = new
            calls += 1
            if on_tokens is not None:
                on_tokens(new)
        t2 = time.perf_counter()
        ran = state.decode_steps
        return Generation(
            tokens,
            np.asarray(state.first_logits),
            t1 - t0,
            t2 - t1 if ran else 0.0,
            lengths_of(tokens, g.stop_tokens),
            ran,
            calls,
        )

    def generate(self, placed, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Tokens ``[B, gen_len]`` and the first step's logits ``[B, vocab]``."""
        g = self.timed_generate(placed, prompts)
        return g.tokens, g.first_logits
