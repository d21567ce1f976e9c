"""Where config files come from: a shipped name (package data, read with importlib.resources,
so it resolves the same from any working directory and in any install) or a path."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from jaxpart.config.errors import ConfigError

FLAGS = {"models": "--model", "meshes": "--mesh"}


def data_root() -> Traversable:
    """The package's shipped data: models/, meshes/ and published.toml."""
    return resources.files("jaxpart") / "data"


def shipped_names(kind: str) -> list[str]:
    """The names of the shipped files of ``kind`` ("models" or "meshes")."""
    folder = data_root() / kind
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def shipped(kind: str) -> list[Traversable]:
    """Every config file of ``kind`` the package ships, for the test that loads them all."""
    return [data_root() / kind / f"{name}.toml" for name in shipped_names(kind)]


def resolve(name_or_path: str, kind: str) -> Traversable:
    """``dense16`` -> the shipped models/dense16.toml; a path (``x.toml`` or ``dir/x``) is
    that file."""
    flag = FLAGS[kind]
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if candidate.is_file():
            return candidate
        raise ConfigError(f"{flag} = {name_or_path!r}: no such file")
    path = data_root() / kind / f"{name_or_path}.toml"
    if path.is_file():
        return path
    raise ConfigError(
        f"{flag} = {name_or_path!r}: not a shipped name (known: {shipped_names(kind)}) and not a "
        "path; give a .toml file's path"
    )


def is_shipped(path: Traversable) -> bool:
    return not isinstance(path, Path) or path.parent.parent == Path(str(data_root()))
