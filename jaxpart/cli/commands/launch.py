"""`jaxpart launch`: try a multi-host run, N processes on this machine."""

from __future__ import annotations

from rich.console import Console

from jaxpart.cli.launch import launch


def run(args, console: Console) -> int:
    return launch(args.processes, args.run, args.init_timeout)
