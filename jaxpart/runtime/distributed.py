"""Multi-host runs on JAX's own multi-controller runtime: one process per host, `jax.distributed`.

Set up from explicit flags (``--coordinator host:port --num-processes N --process-id I``), or
from a cluster launcher's environment (SLURM, Open MPI, or ``JAX_COORDINATOR_ADDRESS`` and
friends, which ``jax.distributed.initialize()`` reads itself). A CPU mesh gives each process its
share of the simulated devices and talks through JAX's CPU collectives (gloo). Devices are
ordered process by process, so a stage's tensor split (contiguous device ids) stays inside one
process and only pipeline hops cross hosts. Only process 0 prints tables and writes files.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from jaxpart.config import ConfigError, MeshConfig

CLUSTER_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")
LAUNCHED = "JAXPART_LAUNCHED"  # set by `jaxpart launch` for its processes: errors name its flags


@dataclass(frozen=True)
class Distributed:
    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout_s: int = 60

    def __post_init__(self):
        if self.num_processes < 1:
            raise ConfigError(f"--num-processes = {self.num_processes}: must be >= 1")
        if not 0 <= self.process_id < self.num_processes:
            raise ConfigError(
                f"--process-id = {self.process_id}: must be in [0, {self.num_processes}) "
                f"for --num-processes = {self.num_processes}"
            )
        if self.num_processes > 1 and not self.coordinator:
            raise ConfigError("--coordinator: needed (host:port) when --num-processes > 1")
        if self.coordinator:
            host, sep, port = self.coordinator.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--coordinator = {self.coordinator!r}: expected host:port")

    @property
    def explicit(self) -> bool:
        return self.num_processes > 1


def from_cluster_env() -> bool:
    """A cluster launcher started us with more than one process."""
    for name in CLUSTER_ENV:
        value = os.environ.get(name)
        if value and (name == "JAX_COORDINATOR_ADDRESS" or value.isdigit() and int(value) > 1):
            return True
    return False


def initialize(setup: Distributed, mesh: MeshConfig) -> None:
    """Start jax.distributed (if this is a multi-process run) before jax's backend starts."""
    import jax

    if not setup.explicit and not from_cluster_env():
        if mesh.platform == "cpu":
            _cpu_devices(mesh.n_devices)
        return
    if mesh.platform == "cpu":
        if mesh.n_devices % setup.num_processes:
            flag = "--processes" if os.environ.get(LAUNCHED) else "--num-processes"
            raise ConfigError(
                f"{flag} = {setup.num_processes}: must divide the {mesh.n_devices} "
                f"devices of --mesh {mesh.name!r}"
            )
        _cpu_devices(mesh.n_devices // setup.num_processes)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if setup.explicit:
        _preflight(setup)
    try:
        if setup.explicit:
            jax.distributed.initialize(
                setup.coordinator,
                setup.num_processes,
                setup.process_id,
                initialization_timeout=setup.timeout_s,
            )
        else:
            jax.distributed.initialize(initialization_timeout=setup.timeout_s)
    except Exception as e:  # unreachable coordinator, port in use, timeout
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"--coordinator = {setup.coordinator!r}: could not join the other processes within "
            f"{setup.timeout_s} s ({first})"
        ) from None


GO = b"jaxpart-go"


def _preflight(setup: Distributed) -> None:
    """Gather every process on the coordinator's port ourselves before jax's runtime starts:
    that runtime aborts the whole process (a native stack trace) when a peer never comes or the
    coordinator cannot be reached, instead of raising. Process 0 listens there until the
    others have connected, tells them to go and closes it; then each starts jax's runtime, whose
    service takes the port over. A peer missing after --init-timeout is one line, exit 2, on
    every side."""
    host, _, port = setup.coordinator.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + setup.timeout_s
    others = setup.num_processes - 1
    if setup.process_id == 0:
        try:
            server = socket.socket(family)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((host, int(port)))
            server.listen(others)
        except OSError as e:
            raise ConfigError(
                f"--coordinator = {setup.coordinator!r}: process 0 cannot serve it on this host "
                f"({e.strerror or e})"
            ) from None
        peers = []
        try:
            while len(peers) < others:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    peers.append(server.accept()[0])
                except TimeoutError:
                    raise ConfigError(
                        f"--coordinator = {setup.coordinator!r}: {len(peers)} of the {others} "
                        f"other process(es) joined within --init-timeout = {setup.timeout_s} s; "
                        "start every process (see `jaxpart launch`)"
                    ) from None
            for peer in peers:
                peer.sendall(GO)
        finally:
            for peer in peers:
                peer.close()
            server.close()
        return
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=max(remaining, 0.01)) as c:
                c.settimeout(max(deadline - time.monotonic(), 0.01))
                if c.recv(len(GO)) == GO:
                    return
                raise OSError("process 0 went away before every process joined")
        except (OSError, TimeoutError) as e:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"--coordinator = {setup.coordinator!r}: process 0 and the others did not "
                    f"all join within --init-timeout = {setup.timeout_s} s "
                    f"({getattr(e, 'strerror', None) or e}); is process 0 running?"
                ) from None
            time.sleep(0.25)


def _cpu_devices(n: int) -> None:
    from jaxpart.runtime.sharding import ensure_cpu_devices

    ensure_cpu_devices(n)


def is_primary() -> bool:
    """Process 0 (or the only process) prints and writes; the others stay quiet."""
    import jax

    return jax.process_index() == 0
