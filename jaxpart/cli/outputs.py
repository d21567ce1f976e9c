"""Output files: every file a run writes, written at its end, all or none, with the user's
umask; only process 0 of a multi-process run writes."""

from __future__ import annotations

import os
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


def write_text_atomically(path: str, text: str) -> None:
    """One output file, as ``write_outputs``."""
    write_outputs({path: text})
