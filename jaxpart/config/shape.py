"""The run shape: how one run is sized (batch, prompt and generation lengths, microbatches).
The one home of the shape: every planner, the memory model, the performance model, the plan
search, the executors and ``verify`` take it; a command resolves it once from its flags. No jax.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxpart.config.errors import ConfigError

if TYPE_CHECKING:
    from jaxpart.config.model import ModelConfig

FLAGS = {
    "batch": "--batch",
    "prompt_len": "--prompt-len",
    "gen_len": "--gen-len",
    "microbatches": "--microbatches",
}


@dataclass(frozen=True)
class RunShape:
    """Sequences in a batch, prompt tokens per sequence, new tokens per sequence (the prefill's
    first included) and microbatches (None: enough to fill the pipeline, chosen per plan)."""

    batch: int
    prompt_len: int
    gen_len: int
    microbatches: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch", "prompt_len", "gen_len", "microbatches"):
            value = getattr(self, name)
            if value is None and name == "microbatches":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{FLAGS[name]} = {value!r}: must be an integer >= 1")

    @property
    def context(self) -> int:
        """Positions a sequence fills: its prompt and its new tokens."""
        return self.prompt_len + self.gen_len

    def check(self, model: ModelConfig) -> RunShape:
        """The one context check: the run must fit the model's context. Returns itself."""
        if self.context > model.seq_len:
            flag = "--prompt-len" if self.prompt_len >= model.seq_len else "--gen-len"
            value = self.prompt_len if flag == "--prompt-len" else self.gen_len
            raise ConfigError(
                f"{flag} = {value}: prompt {self.prompt_len} + generation {self.gen_len} = "
                f"{self.context} exceeds the model's seq_len = {model.seq_len} ({model.source})"
            )
        return self

    def check_split(self, replicas: int, microbatches: int) -> None:
        """The batch must split evenly over data-parallel replicas and microbatches."""
        if self.batch % (replicas * microbatches):
            raise ConfigError(
                f"--batch = {self.batch}: must be divisible by {replicas} data-parallel "
                f"replica(s) x {microbatches} microbatches = {replicas * microbatches}"
            )

    def replace(self, **changes: Any) -> RunShape:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def serving_default(seq_len: int) -> RunShape:
    """The shape a model without a [run] table gets: batch 16, half the context (at most 4096
    positions) as prompt, up to 128 new tokens."""
    context = min(seq_len, 4096)
    prompt = max(1, context // 2)
    return RunShape(batch=16, prompt_len=prompt, gen_len=max(1, min(128, context - prompt)))
