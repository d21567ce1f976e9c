"""`jaxpart`'s entry point: parse, run one command, and turn bad input into one line on stderr
with exit code 2. Each command's module is imported only when it runs, so `plan` and
`simulate` never load jax."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from importlib import import_module

from rich.console import Console

from jaxpart.cli.outputs import check_outputs
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


class Terminated(BaseException):
    """SIGTERM, raised where the run is (as SIGINT raises KeyboardInterrupt), so that staged
    outputs are removed on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def _platform_error(e: RuntimeError) -> str | None:
    """jax's refusal to start a platform that is not there (JAX_PLATFORMS=gpu on a machine
    without one), as one line naming it; None for any other error."""
    text = str(e)
    if "Unable to initialize backend" not in text and "Unknown backend" not in text:
        return None
    import os

    asked = os.environ.get("JAX_PLATFORMS", "")
    return (
        f"JAX_PLATFORMS = {asked!r}: jax cannot start that platform here "
        f"({text.split(':', 1)[-1].strip().split('. ')[0]}); unset it to use what this "
        "machine has"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input: one line, exit 2. Ctrl-C (SIGINT) or SIGTERM: one line,
    exit 130 or 143, staged outputs removed (``outputs.write_outputs``)."""
    console = make_console()
    argv = sys.argv[1:] if argv is None else argv
    warnings.formatwarning = _one_line_warning  # a kernel fallback is one line, not a source dump
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(_join_negative_values(argv))
        check_outputs(args)
        command = import_module(f"jaxpart.cli.commands.{args.command}")
        return command.run(args, console)
    except ConfigError as e:
        print(f"jaxpart: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        line = _platform_error(e)
        if line is None and type(e).__name__ != "KernelFallbackError":  # kernels.backend's
            raise
        print(f"jaxpart: error: {line or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxpart: interrupted (Ctrl-C): nothing was written", file=sys.stderr)
        return 130
    except Terminated:
        print("jaxpart: terminated (SIGTERM): nothing was written", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
