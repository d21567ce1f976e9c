"""How to generate: one frozen ``GenerationConfig`` used by the CLI and the API alike. No jax."""

from __future__ import annotations

from dataclasses import dataclass

from jaxpart.config.errors import ConfigError

STREAM_CHUNK = 16  # decode steps per compiled call when streaming or stopping early


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate, and how.

    - ``max_new_tokens``: tokens per sequence, the prefill's first included (None: the run's
      ``gen_len``).
    - ``temperature``: 0 is greedy (argmax); otherwise logits / temperature are sampled,
      after ``top_k`` (0: off) and ``top_p`` (1: off) filtering. The random key for sequence i
      of the batch at token t depends only on (``seed``, i, t): every placement draws the same.
    - ``stop_tokens``: a sequence ends after emitting one (the tokenizer's EOS is added by the
      CLI when there is one); it then emits ``pad_token``, and its length counts the stop token.
    - ``chunk``: decode steps per compiled call. None: the whole generation in one call, unless
      there are stop tokens or a streaming callback, then STREAM_CHUNK. Between calls decoding
      ends early once every sequence has stopped, and a callback gets the new tokens.
    """

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_tokens: tuple[int, ...] = ()
    pad_token: int = 0
    chunk: int | None = None

    def __post_init__(self) -> None:
        checks = (
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 1, ">= 1"),
            ("temperature", 0 <= self.temperature < float("inf"), "a finite number >= 0"),
            ("top_k", self.top_k >= 0, ">= 0 (0: off)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("seed", 0 <= self.seed < 2**32, "in [0, 2^32)"),
            ("pad_token", self.pad_token >= 0, ">= 0"),
            ("chunk", self.chunk is None or self.chunk >= 1, ">= 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag} = {getattr(self, name)!r}: must be {rule}")
        # the sampler computes in float32: a value that is 0 or subnormal there would divide by
        # zero or lose its precision, not do what it says
        tiny = 1.1754944e-38  # float32's smallest normal number
        for name, value in (("temperature", self.temperature), ("top_p", self.top_p)):
            if value != 0 and abs(value) < tiny:
                flag = name.replace("_", "-")
                raise ConfigError(
                    f"--{flag} = {value!r}: below float32's smallest normal number ({tiny:g}), "
                    "which the sampler computes in"
                    + ("; 0 is greedy" if name == "temperature" else "")
                )
        if any(t < 0 for t in self.stop_tokens):
            raise ConfigError(f"--stop-tokens = {list(self.stop_tokens)}: token ids are >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check_vocab(self, vocab: int) -> None:
        for name, ids in (("stop-tokens", self.stop_tokens), ("pad-token", (self.pad_token,))):
            bad = [t for t in ids if t >= vocab]
            if bad:
                raise ConfigError(f"--{name} = {bad[0]}: outside the vocab [0, {vocab})")

    def steps_per_call(self, steps: int, streaming: bool) -> int:
        """Decode steps per compiled call, for ``steps`` decode steps in all."""
        if self.chunk is not None:
            return min(self.chunk, steps)
        if self.stop_tokens or streaming:
            return min(STREAM_CHUNK, steps)
        return steps


GREEDY = GenerationConfig()
