"""One module per `jaxpart` command, each with ``run(args, console) -> exit code``:
orchestration only; flags are resolved in ``jaxpart.cli.args``, text drawn in
``jaxpart.cli.render``, files written by ``jaxpart.cli.outputs``."""
