"""`jaxpart launch --processes N -- <command>`: try a multi-host run on one machine.

Spawns N jaxpart processes on loopback, each with 16 / N simulated CPU devices, joined by
jax.distributed and JAX's CPU collectives. It forwards their output (process 0's as is, the
others' prefixed), fails as soon as any process fails, naming it, and never leaves a child
behind: on a failure or Ctrl-C every child's process group is terminated, then killed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from jaxpart.config import ConfigError
from jaxpart.runtime.distributed import LAUNCHED

RUN_COMMANDS = ("generate", "compare")
GRACE_S = 5.0
# gloo announces every connection (its lines can interleave); that is noise to a user.
NOISE = re.compile(r"connected to \d+ peer ranks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(proc: subprocess.Popen, prefix: str, out) -> None:
    for line in proc.stdout:
        if not NOISE.search(line):
            out.write(prefix + line)
            out.flush()


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate every child's process group; kill what is left after a grace period."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def launch(processes: int, command: list[str], init_timeout: int = 60, out=None) -> int:
    """Run ``command`` (a jaxpart run command) as ``processes`` cooperating processes."""
    out = out or sys.stdout
    if processes < 1:
        raise ConfigError(f"--processes = {processes}: must be >= 1")
    if command[:1] == ["--"]:
        command = command[1:]
    if not command or command[0] not in RUN_COMMANDS:
        raise ConfigError(
            f"launch: the command must be one of {list(RUN_COMMANDS)}, e.g. "
            "`jaxpart launch --processes 2 -- generate --model dense16-tiny --mesh cpu16`"
        )
    for flag in ("--coordinator", "--num-processes", "--process-id"):
        if flag in command:
            raise ConfigError(f"launch: {flag} is set by the launcher; leave it out")
    from jaxpart.cli.parser import build_parser

    parsed = build_parser().parse_args(command)  # a bad flag: one line here, not one a process
    from jaxpart.config import load_mesh

    mesh = load_mesh(parsed.mesh)
    if mesh.platform == "cpu" and mesh.n_devices % processes:
        raise ConfigError(
            f"--processes = {processes}: must divide the {mesh.n_devices} devices of "
            f"--mesh {mesh.name!r}"
        )
    address = f"127.0.0.1:{free_port()}"
    procs, threads = [], []
    try:
        for i in range(processes):
            argv = [
                sys.executable,
                "-m",
                "jaxpart.cli",
                *command,
                "--coordinator",
                address,
                "--num-processes",
                str(processes),
                "--process-id",
                str(i),
                "--init-timeout",
                str(init_timeout),
            ]
            p = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                env={**os.environ, LAUNCHED: "1"},
            )
            procs.append(p)
            t = threading.Thread(
                target=_forward, args=(p, "" if i == 0 else f"[process {i}] ", out), daemon=True
            )
            t.start()
            threads.append(t)
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # When a process dies, jax's runtime aborts its peers (SIGABRT): blame the one
                # that did not abort if both are seen at once.
                i, code = min(failed, key=lambda f: f[1] in (-signal.SIGABRT, 128 + 6))
                _stop(procs)
                for t in threads:
                    t.join(timeout=2)
                how = f"signal {-code}" if code < 0 else f"code {code}"
                print(
                    f"jaxpart launch: process {i} of {processes} failed ({how}); stopped the "
                    "others",
                    file=sys.stderr,
                )
                return code if 0 < code < 128 else 1
            if all(c == 0 for c in codes):
                for t in threads:
                    t.join(timeout=5)
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs)
        print("jaxpart launch: interrupted; stopped every process", file=sys.stderr)
        return 130
    finally:
        _stop(procs)
