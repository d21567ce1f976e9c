"""Chat templates: an instruct model's prompt as its users see it everywhere else. The folder's
template (``tokenizer_config.json``'s ``chat_template``, or ``chat_template.jinja``) renders one
user message with the generation prompt, in a sandboxed jinja2 environment set up as
transformers sets it up (utils/chat_template_utils.py, ``_compile_jinja_template``:
``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with the loop-control
extension, a ``tojson`` that does not escape HTML, ``raise_exception`` and ``strftime_now``),
with the tokenizer's named special tokens (``bos_token``, ``eos_token``, ...) as variables; the
text is then tokenized without adding special tokens (the template writes them), as
``apply_chat_template`` does."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from jaxpart.config import ConfigError

SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return doc


def chat_template(folder: Path) -> str:
    """The folder's chat template: tokenizer_config.json's (a string, or named templates of
    which the "default"), else chat_template.jinja; a one-line error if it has none."""
    template = _tokenizer_config(folder).get("chat_template")
    if isinstance(template, list):  # named templates, as transformers saves several
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    if not isinstance(template, str) or not template:
        raise ConfigError(
            f"--chat: model folder '{folder}' has no chat template (tokenizer_config.json's "
            "chat_template or chat_template.jinja)"
        )
    return template


def special_tokens(folder: Path) -> dict[str, str]:
    """The tokenizer's named special tokens, as strings (an AddedToken's content)."""
    doc = _tokenizer_config(folder)
    out = {}
    for name in SPECIAL_TOKENS:
        value = doc.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[name] = value
    return out


def render(folder: Path, text: str) -> str:
    """One user message ``text``, rendered by the folder's template with the generation
    prompt."""
    template = chat_template(folder)  # a folder without one is refused first
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError("--chat needs jinja2: pip install jinja2") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        compiled = env.from_string(template)
        return compiled.render(
            messages=[{"role": "user", "content": text}],
            add_generation_prompt=True,
            **special_tokens(folder),
        )
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"--chat: the chat template of '{folder}' failed: {e}") from None


def encode_chat(folder: Path, tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text as one user turn of a chat, in token ids (no special tokens added: the
    template wrote them)."""
    return [tokenizer.encode(render(folder, t), add_special_tokens=False).ids for t in texts]
