"""Where a run's prompts come from (--prompt, --task, --text, --prompts, or random from --seed),
resolved once into rows, with the settings of generation (sampling, stop tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxpart.config import ConfigError, GenerationConfig, ModelConfig, RunShape

PROMPT_FLAGS = ("prompt", "task", "text", "prompts")


@dataclass(frozen=True)
class Prompts:
    """The prompts of a run: ``rows`` (token-id lists, one a sequence; None: random from the
    seed), the task they come from and its answers, the tokenizer that shows them as text."""

    rows: Any = None  # list of token-id lists or a [B, T] array; None: random
    task: Any = None  # jaxpart.train.tasks.Task
    answers: Any = None
    tokenizer: Any = None
    described: str = ""

    @property
    def batch(self) -> int | None:
        return None if self.rows is None else len(self.rows)

    @property
    def prompt_len(self) -> int | None:
        return None if self.rows is None else max(len(r) for r in self.rows)

    @property
    def gen_len(self) -> int | None:
        return self.task.answer_len if self.task is not None else None

    def row(self, i: int) -> list[int]:
        return [] if self.rows is None else list(self.rows[i])


def check_prompt_flags(args) -> None:
    """Flags that would be ignored beside the prompts given are refused, by name."""
    given = [f for f in PROMPT_FLAGS if getattr(args, f, None)]
    if given and args.prompt_len:
        raise ConfigError(
            f"--prompt-len = {args.prompt_len} and --{given[0]}: the prompts set their own "
            "length; give one of them"
        )
    listed = [f for f in ("text", "prompts") if getattr(args, f, None)]
    if listed and args.batch:
        raise ConfigError(
            f"--batch = {args.batch} and --{listed[0]}: the batch is one sequence a prompt; "
            "give one of them"
        )
    if getattr(args, "prompt", None) and getattr(args, "task", None):
        raise ConfigError("--prompt and --task: give one of them")
    for flag in ("prompt", "task"):
        if getattr(args, flag, None) and listed:
            raise ConfigError(f"--text/--prompts and --{flag}: give one of them")


def resolve_prompts(args, model: ModelConfig, default: RunShape) -> Prompts:
    """The run's prompts from its flags (checked by ``check_prompt_flags`` first). One --prompt
    is broadcast to the batch (--batch, else the model file's)."""
    check_prompt_flags(args)
    batch = args.batch or default.batch
    if getattr(args, "chat", False) and not (args.text or args.prompts):
        raise ConfigError("--chat renders text prompts: give --text or a --prompts file of text")
    if getattr(args, "task", None):
        import numpy as np

        from jaxpart.train.tasks import Task

        task = Task(args.task)
        task.check(model.vocab, model.seq_len)
        rows, answers = task.sample(np.random.default_rng([args.seed, 1]), batch)
        return Prompts(rows, task, answers, described=f"task {task.name}")
    if getattr(args, "prompt", None):
        bad = [t for t in args.prompt if not 0 <= t < model.vocab]
        if bad:
            raise ConfigError(
                f"--prompt = {','.join(map(str, args.prompt))}: prompt token {bad[0]} is outside "
                f"the vocab [0, {model.vocab})"
            )
        rows = [list(args.prompt) for _ in range(batch)]
        # Token ids, as a --prompts file of ids: a model folder's tokenizer shows them as text
        # and adds its EOS to the stop tokens.
        described = f"one prompt of {len(args.prompt)} tokens, x{batch}"
        return Prompts(rows, tokenizer=_tokenizer_if_any(model), described=described)
    texts = list(args.text or [])
    ids = None
    if args.prompts:
        from jaxpart.io.text import read_prompts

        read = read_prompts(args.prompts)
        if isinstance(read[0], list):
            ids = read
        else:
            texts += read
    if not texts and ids is None:
        return Prompts(described=f"random, seed {args.seed}")
    from jaxpart.io.text import encode, tokenizer_for

    if ids is not None:
        if texts:
            raise ConfigError("--text and a --prompts file of token ids: give one of them")
        if getattr(args, "chat", False):
            raise ConfigError(
                f"--chat and --prompts = {args.prompts}: it holds token ids, not text"
            )
        bad = [t for row in ids for t in row if t >= model.vocab]
        if bad:
            raise ConfigError(f"--prompts: token {bad[0]} is outside the vocab [0, {model.vocab})")
        described = f"{len(ids)} prompt(s) of token ids"
        return Prompts(ids, tokenizer=_tokenizer_if_any(model), described=described)
    tokenizer = tokenizer_for(model)
    chat = model.hf_folder if getattr(args, "chat", False) else None
    rows = encode(tokenizer, texts, model.vocab, chat)
    described = f"{len(rows)} text prompt(s)" + (" as chat turns" if chat else "")
    return Prompts(rows, tokenizer=tokenizer, described=described)


def has_tokenizer(model: ModelConfig) -> bool:
    return bool(model.hf_folder and (model.hf_folder / "tokenizer.json").is_file())


def _tokenizer_if_any(model: ModelConfig):
    """The model folder's tokenizer where it has one, else None."""
    if not has_tokenizer(model):
        return None
    from jaxpart.io.text import tokenizer_for

    return tokenizer_for(model)


def generation_config(args, model: ModelConfig, tokenizer) -> GenerationConfig:
    """The GenerationConfig the sampling flags give; the tokenizer's EOS stops too."""
    from jaxpart.io.text import eos_tokens

    stop = tuple(args.stop_tokens or ())
    if tokenizer is not None:
        stop += tuple(t for t in eos_tokens(model) if t not in stop)
    g = GenerationConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.sampling_seed,
        stop_tokens=stop,
        pad_token=args.pad_token,
    )
    g.check_vocab(model.vocab)
    return g
