"""Text in and out: a model folder's ``tokenizer.json`` (the ``tokenizers`` library) turns
``--text`` / ``--prompts FILE`` into token ids and generated ids back into text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxpart.config import ConfigError, ModelConfig


def tokenizer_for(cfg: ModelConfig):
    """The tokenizer of the Hugging Face folder the model came from, or a one-line error."""
    path = cfg.hf_folder / "tokenizer.json" if cfg.hf_folder else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"--text: model {cfg.name!r} has no tokenizer.json (text needs a Hugging Face "
            "folder that holds one; give token ids with --prompt instead)"
        )
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def read_prompts(path: str) -> list[str]:
    """One prompt a line; blank lines are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--prompts = {path!r}: cannot read it ({type(e).__name__})") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ConfigError(f"--prompts = {path!r}: no prompt in it")
    return texts


def encode(tokenizer, texts: list[str], vocab: int) -> np.ndarray:
    """[len(texts), T] token ids. Every prompt must come to the same length: prompts of several
    lengths in one batch are not supported yet."""
    ids = [tokenizer.encode(t).ids for t in texts]
    lengths = sorted({len(i) for i in ids})
    if lengths[0] == 0:
        raise ConfigError(f"--text = {texts[[len(i) for i in ids].index(0)]!r}: no tokens")
    if len(lengths) > 1:
        raise ConfigError(
            f"--text: the prompts are {lengths} tokens long; one batch needs prompts of one "
            "length (prompts of several lengths are not supported yet)"
        )
    out = np.array(ids, np.int32)
    if out.max() >= vocab:
        raise ConfigError(f"--text: the tokenizer gives id {out.max()}, outside the vocab {vocab}")
    return out


def decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
