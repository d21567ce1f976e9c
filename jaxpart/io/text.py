"""Text in and out: a model folder's ``tokenizer.json`` (the ``tokenizers`` library) turns
``--text`` / ``--prompts FILE`` into token ids and generated ids back into text; a prompts file
may hold token ids instead (JSON lists, one a line)."""

from __future__ import annotations

import json
from pathlib import Path

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

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{path}: not a tokenizer the tokenizers library reads ({first})"
        ) from None


def read_prompts(path: str) -> list[str] | list[list[int]]:
    """One prompt a line, blank lines skipped: token-id lists when every line is a JSON list of
    integers, else text."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--prompts = {path!r}: cannot read it ({type(e).__name__})") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ConfigError(f"--prompts = {path!r}: no prompt in it")
    ids = [_token_ids(line) for line in texts]
    if all(i is not None for i in ids):
        for n, row in enumerate(ids, 1):
            if not row:
                raise ConfigError(f"--prompts = {path!r}: prompt {n} has no tokens")
        return ids
    mixed = next((n for n, row in enumerate(ids, 1) if row is not None), None)
    if mixed is not None:  # some lines are id lists, others text: which was meant?
        text_line = next(n for n, row in enumerate(ids, 1) if row is None)
        raise ConfigError(
            f"--prompts = {path!r}: prompt {mixed} is a list of token ids and prompt "
            f"{text_line} is text; a prompts file holds one kind"
        )
    return texts


def _token_ids(line: str) -> list[int] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if isinstance(value, list) and all(type(v) is int and v >= 0 for v in value):
        return value
    return None


def encode(tokenizer, texts: list[str], vocab: int, chat=None) -> list[list[int]]:
    """Token ids of each prompt (their lengths may differ); with ``chat`` (the model folder),
    each rendered as a user turn by its chat template (``jaxpart.io.chat``)."""
    if chat is not None:
        from jaxpart.io.chat import encode_chat

        ids = encode_chat(chat, tokenizer, texts)
    else:
        ids = [tokenizer.encode(t).ids for t in texts]
    for text, row in zip(texts, ids, strict=True):
        if not row:
            raise ConfigError(f"--text = {text!r}: no tokens")
        if max(row) >= vocab:
            raise ConfigError(
                f"--text: the tokenizer gives id {max(row)}, outside the vocab {vocab}"
            )
    return ids


def eos_tokens(cfg: ModelConfig) -> tuple[int, ...]:
    """The end-of-sequence ids the model folder names (generation_config.json, else
    config.json), or none."""
    if not cfg.hf_folder:
        return ()
    for name in ("generation_config.json", "config.json"):
        path = cfg.hf_folder / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:  # there, but damaged: said, not skipped
            raise ConfigError(f"{path}: not valid JSON ({type(e).__name__})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        value = doc.get("eos_token_id")
        if value is not None:
            ids = value if isinstance(value, list) else [value]
            return tuple(int(i) for i in ids if isinstance(i, int) and 0 <= i < cfg.vocab)
    return ()


def decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
