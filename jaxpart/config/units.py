"""Sizes: '14.73GB' to bytes and back. No jax."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jaxpart.config.errors import ConfigError

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int | float, field: str = "size") -> int:
    """'14.73GB' -> 14_730_000_000 bytes. GB = 10^9, GiB = 2^30; a bare number is bytes.

    Decimal arithmetic keeps the seed's figures exact ('14.73GB' is exactly 14.73e9 bytes).
    """
    if isinstance(text, bool):
        raise ConfigError(f"{field} = {text!r}: expected a size such as 50MB or 1.5GiB")
    if isinstance(text, int | float):
        number, unit = Decimal(str(text)), ""
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise ConfigError(f"{field} = {text!r}: expected a size such as 50MB, 1.5GiB or 4096")
        try:
            number = Decimal(match.group(1))
        except InvalidOperation:
            raise ConfigError(f"{field} = {text!r}: not a number") from None
        unit = match.group(2).upper()
        if unit not in _UNITS:
            raise ConfigError(
                f"{field} = {text!r}: unknown unit {match.group(2)!r} "
                "(use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )
    value = number * _UNITS[unit]
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"{field} = {text!r}: must be positive (and finite)")
    if value >= 2**63:
        raise ConfigError(f"{field} = {text!r}: too large (at most 8 EiB)")
    return int(value.to_integral_value())


def format_bytes(n: float) -> str:
    """Decimal units, as the seed writes them (GB = 10^9)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"
