"""`jaxpart`'s entry point: parse, run one command, and turn bad input into one line on stderr
with exit code 2. Each command's module is imported only when it runs, so `plan` and
`simulate` never load jax."""

from __future__ import annotations

import sys
import warnings
from importlib import import_module

from rich.console import Console

from jaxpart.cli.parser import build_parser
from jaxpart.config import ConfigError


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--capacity -3GB` -> `--capacity=-3GB`, so that a negative value gets its own error."""
    out: list[str] = []
    for tok in argv:
        if (
            out
            and out[-1].startswith("--")
            and "=" not in out[-1]
            and tok[:2] != "--"
            and (len(tok) > 1 and tok[0] == "-" and (tok[1].isdigit() or tok[1] == "."))
        ):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"jaxpart: warning: {message}\n"


def make_console() -> Console:
    """On a terminal: rich output at its width. In a pipe or a file: plain lines, never wrapped
    mid-sentence, tables as wide as they need, each line flushed as it is printed."""
    if sys.stdout.isatty():
        return Console()
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):  # a stream that cannot (pytest's capture)
        pass
    return Console(soft_wrap=True, width=160, color_system=None)


def main(argv: list[str] | None = None) -> int:
    console = make_console()
    argv = sys.argv[1:] if argv is None else argv
    warnings.formatwarning = _one_line_warning  # a kernel fallback is one line, not a source dump
    try:
        args = build_parser().parse_args(_join_negative_values(argv))
        command = import_module(f"jaxpart.cli.commands.{args.command}")
        return command.run(args, console)
    except ConfigError as e:
        print(f"jaxpart: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "KernelFallbackError":  # jaxpart.model.kernels.backend's
            raise
        print(f"jaxpart: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
