"""Reading config TOML: fields popped one by one, so that missing and unknown ones get named
errors."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from jaxpart.config.errors import ConfigError
from jaxpart.config.units import parse_size


def positive_int(source: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source}: field '{name}' = {value!r}: must be a positive integer")


def positive_number(source: str, name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < math.inf  # NaN fails both
    ):
        raise ConfigError(f"{source}: field '{name}' = {value!r}: must be a finite positive number")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None


class Fields:
    """Pops fields out of a TOML table so that missing and unknown fields get named errors."""

    def __init__(self, source: str, table: Any, prefix: str):
        if not isinstance(table, dict):
            raise ConfigError(
                f"{source}: field '{prefix.rstrip('.')}' = {table!r}: expected a table"
            )
        self.source, self.table, self.prefix = source, dict(table), prefix

    def take(self, name: str, default: Any = ...) -> Any:
        if name in self.table:
            return self.table.pop(name)
        if default is ...:
            raise ConfigError(f"{self.source}: missing field '{self.prefix}{name}'")
        return default

    def size(self, name: str, default: Any = ...) -> int:
        value = self.take(name, default)
        if value == 0:
            return 0
        return parse_size(value, f"{self.source}: field '{self.prefix}{name}'")

    def number(self, name: str) -> float:
        value = self.take(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value < math.inf
        ):
            raise ConfigError(
                f"{self.source}: field '{self.prefix}{name}' = {value!r}: must be a finite "
                "number >= 0"
            )
        return float(value)

    def done(self) -> None:
        if self.table:
            unknown = sorted(self.table)[0]
            raise ConfigError(f"{self.source}: unknown field '{self.prefix}{unknown}'")
