"""Output files: every file a run writes, written at its end, all or none, with the user's
umask; only process 0 of a multi-process run writes."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from jaxpart.config import ConfigError


def write_outputs(files: dict[str, str | bytes]) -> None:
    """Write every output of a run at its end, all or none: each is written beside its path
    first, then all are renamed into place; a failure removes what was staged and leaves the
    user's files as they were. Files get the user's umask. In a multi-process run only
    process 0 writes."""
    if "jax" in sys.modules and sys.modules["jax"].process_index() != 0:
        return
    umask = os.umask(0)
    os.umask(umask)
    staged = []
    try:
        for path, content in files.items():
            target = Path(path)
            if _special(target):  # a device, a pipe, /dev/stdout: written into, never replaced
                _write_into(target, content.encode() if isinstance(content, str) else content)
                continue
            if target.is_symlink():  # the file it points to is replaced; the link stays
                target = target.resolve()
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, target in staged:
            os.replace(tmp, target)
    except OSError as e:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def _write_into(target: Path, data: bytes) -> None:
    """Write into a device, a pipe or a stream: this process's own stdout or stderr (however
    named, wherever redirected) through its stream, in order with what it prints; anything
    else opened for appending."""
    st = os.stat(target)
    for stream in (sys.stdout, sys.stderr):
        try:
            own = os.fstat(stream.fileno())
        except (AttributeError, OSError, ValueError):  # a stream without a descriptor
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            stream.flush()
            stream.buffer.write(data if data.endswith(b"\n") else data + b"\n")
            stream.flush()
            return
    with open(target, "ab") as f:
        f.write(data)


def _special(path: Path) -> bool:
    """Whether ``path`` is there and is not a regular file of the user's: a device, a pipe, or
    a stream of the process (/dev/stdout, /dev/fd/N, /proc/self/fd/N, whatever they point
    at: a stream redirected to a file is still written into, never renamed over)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True
    except OSError:
        return False
    absolute = os.path.abspath(path)
    return absolute.startswith(("/dev/", "/proc/")) or os.path.realpath(path).startswith(
        ("/dev/", "/proc/")
    )


def _identity(path: Path):
    """What makes two paths one file: its device and inode where it exists, else the absolute
    path with its folder's links resolved."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(path.parent.resolve() / path.name))


def input_files(args) -> dict[str, list[Path]]:
    """Every file the run reads, by the flag that names it: the model (a TOML file, or every
    file of a Hugging Face folder), the mesh, a calibration, prompts, a checkpoint to load."""
    out: dict[str, list[Path]] = {}
    for flag in ("model", "mesh", "calibration", "prompts"):
        value = getattr(args, flag, None)
        if isinstance(value, str) and os.path.exists(value):
            path = Path(value)
            out[f"--{flag}"] = sorted(p for p in path.iterdir()) if path.is_dir() else [path]
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and getattr(args, "command", None) != "train" and os.path.isdir(checkpoint):
        out["--checkpoint"] = [p for p in Path(checkpoint).rglob("*") if p.is_file()]
    return out


def check_outputs(args) -> None:
    """Before any work: no output is written onto a file the run reads, and no two outputs
    share a path (a one-line error naming both flags). Devices and pipes are outputs like any
    file (written into, not replaced)."""
    outputs = {
        f"--{flag}": Path(getattr(args, flag))
        for flag in ("json", "plot")
        if isinstance(getattr(args, flag, None), str)
    }
    seen = {}
    for flag, path in outputs.items():
        key = _identity(path)
        if key in seen and not _special(path):
            raise ConfigError(
                f"{flag} = '{path}': the same file as {seen[key]}; each output needs its own"
            )
        seen[key] = flag
    reads = {_identity(p): (flag, p) for flag, paths in input_files(args).items() for p in paths}
    for flag, path in outputs.items():
        hit = reads.get(_identity(path))
        if hit is not None and not _special(path):
            raise ConfigError(
                f"{flag} = '{path}': that is {hit[1]}, which {hit[0]} reads; writing it would "
                "replace the input (name another file)"
            )


def write_text_atomically(path: str, text: str) -> None:
    """One output file, as ``write_outputs``."""
    write_outputs({path: text})
