"""The `jaxpart` command line: the parser, argument resolution, one module per command, rendering
and output files. Nothing else in the package imports it."""

from jaxpart.cli.main import main

__all__ = ["main"]
