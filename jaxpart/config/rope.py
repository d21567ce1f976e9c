"""Rotary position scaling, as Hugging Face transformers defines it (src/transformers/
modeling_rope_utils.py: ``_compute_{linear_scaling,dynamic_ntk,yarn,longrope,llama3}_
parameters``, ``standardize_rope_params`` and ``dynamic_rope_update``). No jax: the static
frequencies are numpy; the ones that depend on the current length (dynamic, longrope) are
computed in the layer (``jaxpart.model.layers.rope``) from what this module resolves.

A config gives the scaling as ``rope_scaling`` (transformers before 5.0; ``type`` or
``rope_type``) or ``rope_parameters`` (5.x, with ``rope_theta`` inside); a model file as its
``[model.rope_scaling]`` table, with the same keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jaxpart.config.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
# Every key a scaling table may hold; any other is refused (a key that changes the maths and is
# not applied must not pass silently).
KEYS = {
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "low_freq_factor",
    "high_freq_factor",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "truncate",
    "short_factor",
    "long_factor",
    "partial_rotary_factor",
}


@dataclass(frozen=True)
class RopeScaling:
    """A scaling, resolved: every value the frequencies need, defaults applied as transformers
    applies them. Hashable, so the layers take it as a static argument."""

    type: str
    factor: float = 1.0
    original_max: int = 0  # llama3, yarn, longrope: the pretraining context
    max_positions: int = 0  # dynamic: the context it scales beyond (max_position_embeddings)
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float = 1.0  # multiplies cos and sin (yarn, longrope)
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        out = {"rope_type": self.type, "factor": self.factor}
        if self.type in ("llama3", "yarn", "longrope"):
            out["original_max_position_embeddings"] = self.original_max
        if self.type == "llama3":
            out |= {
                "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
            }
        if self.type == "yarn":
            out |= {"beta_fast": self.beta_fast, "beta_slow": self.beta_slow}
            out |= {"truncate": self.truncate, "attention_factor": self.attention_factor}
        if self.type == "longrope":
            out |= {"short_factor": list(self.short_factor), "long_factor": list(self.long_factor)}
            out["attention_factor"] = self.attention_factor
        return out


def _number(where: str, key: str, value, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: field '{key}' = {value!r}: must be a number")
    if positive and value <= 0:
        raise ConfigError(f"{where}: field '{key}' = {value!r}: must be > 0")
    return float(value)


def parse_scaling(
    table: dict | None,
    where: str,
    *,
    max_positions: int,
    head_dim: int,
    top_original_max: int | None = None,
) -> tuple[RopeScaling | None, float | None]:
    """(the scaling or None for plain RoPE, the ``rope_theta`` the table holds or None) from a
    ``rope_scaling`` / ``rope_parameters`` table. ``max_positions`` is the config's
    ``max_position_embeddings``; ``top_original_max`` a top-level
    ``original_max_position_embeddings`` (Phi-3), which wins over the table's."""
    if table is None:
        return None, None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of rope parameters, got {table!r}")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: field '{unknown[0]}' = {table[unknown[0]]!r}: not a rope parameter "
            "jaxpart applies"
        )
    kind = table.get("rope_type", table.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConfigError(
            f"{where}: rope type {kind!r} is not implemented (use one of {list(ROPE_TYPES)})"
        )
    theta = table.get("rope_theta")
    if theta is not None:
        theta = _number(where, "rope_theta", theta)
    if table.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(
            f"{where}: field 'partial_rotary_factor' = {table['partial_rotary_factor']!r}: only "
            "full rotary embeddings are implemented"
        )
    if kind == "default":
        return None, theta

    def get(key: str, default=None):
        value = table.get(key)
        return default if value is None else value

    factor = get("factor")
    original = top_original_max or get("original_max_position_embeddings") or max_positions
    original = int(_number(where, "original_max_position_embeddings", original))
    if factor is None and kind in ("yarn", "longrope"):
        factor = max_positions / original
    if factor is None:
        raise ConfigError(f"{where}: rope type {kind!r} needs field 'factor'")
    factor = _number(where, "factor", factor)
    out = {"type": kind, "factor": factor, "original_max": original}
    if kind == "dynamic":
        out["max_positions"] = max_positions
    elif kind == "llama3":
        for key in ("low_freq_factor", "high_freq_factor"):
            if key not in table:
                raise ConfigError(f"{where}: rope type 'llama3' needs field '{key}'")
            out[key] = _number(where, key, table[key])
        if out["high_freq_factor"] <= out["low_freq_factor"]:
            raise ConfigError(
                f"{where}: field 'high_freq_factor' = {out['high_freq_factor']}: must exceed "
                f"low_freq_factor = {out['low_freq_factor']}"
            )
    elif kind == "yarn":
        out["beta_fast"] = _number(where, "beta_fast", get("beta_fast", 32))
        out["beta_slow"] = _number(where, "beta_slow", get("beta_slow", 1))
        out["truncate"] = bool(get("truncate", True))
        attention = get("attention_factor")
        if attention is None:
            mscale, mscale_all = get("mscale"), get("mscale_all_dim")

            def m(scale: float, k: float = 1.0) -> float:
                return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0

            attention = (
                m(factor, mscale) / m(factor, mscale_all) if mscale and mscale_all else m(factor)
            )
        out["attention_factor"] = _number(where, "attention_factor", attention)
    elif kind == "longrope":
        half = head_dim // 2
        for key in ("short_factor", "long_factor"):
            values = table.get(key)
            if not isinstance(values, list) or len(values) != half:
                raise ConfigError(
                    f"{where}: field '{key}': must be a list of {half} numbers (head_dim / 2)"
                )
            out[key] = tuple(_number(where, key, v) for v in values)
        attention = get("attention_factor")
        if attention is None:
            attention = (
                1.0
                if factor <= 1.0
                else math.sqrt(1 + math.log(factor) / math.log(out["original_max"]))
            )
        out["attention_factor"] = _number(where, "attention_factor", attention)
    return RopeScaling(**out), theta


def base_inv_freq(theta: float, dim: int) -> np.ndarray:
    """Plain RoPE: theta ** (-2i / dim), i < dim / 2, computed as transformers does (float32)."""
    import numpy as np

    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)


def inv_freq(theta: float, dim: int, scaling: RopeScaling | None, long: bool = False) -> np.ndarray:
    """The inverse frequencies of the static scalings (and longrope's short or ``long`` set);
    dynamic's depend on the current length and are made in the layer."""
    import numpy as np

    plain = base_inv_freq(theta, dim)
    if scaling is None or scaling.type == "dynamic":
        return plain
    s = scaling
    if s.type == "linear":
        return (plain / np.float32(s.factor)).astype(np.float32)
    if s.type == "llama3":
        # bands by wavelength: long ones divided by the factor, short ones kept, the middle
        # blended by a smooth factor
        low_wavelen = s.original_max / s.low_freq_factor
        high_wavelen = s.original_max / s.high_freq_factor
        wavelen = np.float32(2 * math.pi) / plain
        scaled = np.where(wavelen > low_wavelen, plain / np.float32(s.factor), plain)
        smooth = (s.original_max / wavelen - s.low_freq_factor) / (
            s.high_freq_factor - s.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    if s.type == "yarn":

        def correction_dim(rotations: float) -> float:
            return (dim * math.log(s.original_max / (rotations * 2 * math.pi))) / (
                2 * math.log(theta)
            )

        low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
        if s.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        extrapolate = 1 - ramp.astype(np.float32)
        pos_freqs = np.float32(theta) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
        interpolation = np.float32(1.0) / (np.float32(s.factor) * pos_freqs)
        extrapolation = np.float32(1.0) / pos_freqs
        out = interpolation * (1 - extrapolate) + extrapolation * extrapolate
        return out.astype(np.float32)
    if s.type == "longrope":
        ext = np.asarray(s.long_factor if long else s.short_factor, dtype=np.float32)
        shape = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        return (np.float32(1.0) / (ext * np.float32(theta) ** shape)).astype(np.float32)
    raise ValueError(s.type)


def context_cap(max_positions: int, scaling: RopeScaling | None, cap: int = 4096) -> int:
    """The context jaxpart allows a Hugging Face folder: its max_position_embeddings, and for
    dynamic NTK (which scales beyond it) that times the factor; at most ``cap``."""
    if scaling is not None and scaling.type == "dynamic":
        return min(cap, int(max_positions * scaling.factor))
    return min(cap, max_positions)
