"""The closed sets of names jaxpart's options and results take: placement methods, partition
strategies, fit definitions, kernel backends and dtypes. No jax.

Each is a ``StrEnum``: a member equals its string, so flags, TOML values and JSON stay plain
strings, and a string given by a user compares equal to the member it names.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """A closed set of names. A member's repr is its string's, so a message that quotes a value
    or lists the choices (``use one of ['greedy', 'balanced', 'manual']``) reads the same for a
    member as for the string."""

    def __repr__(self) -> str:
        return repr(self.value)


class Method(Kind):
    """How a model is placed: whole on one device, TP x PP, or the layer-wise plan."""

    REFERENCE = "reference"
    BASELINE = "baseline"
    LAYERWISE = "layerwise"


# The two placements of a whole mesh, in the order they are predicted and reported.
PLACEMENTS = (Method.BASELINE, Method.LAYERWISE)


class Strategy(Kind):
    """The layer-wise partitioner (``jaxpart.planning.partition``)."""

    GREEDY = "greedy"
    BALANCED = "balanced"
    MANUAL = "manual"


class FitDefinition(Kind):
    """What must fit a capacity (``jaxpart.planning.memory.FIT_DEFINITIONS`` says each in
    words): the resident set, everything a device holds, or the seed's stated figures."""

    RESIDENT = "resident"
    EVERYTHING = "everything"
    STATED = "stated"


class Backend(Kind):
    """What runs a kernel: ``auto`` is Pallas on GPU and XLA elsewhere."""

    AUTO = "auto"
    PALLAS = "pallas"
    XLA = "xla"

    @staticmethod
    def auto_on(platform: str) -> Backend:
        """The backend ``auto`` picks on ``platform``."""
        return Backend.PALLAS if platform == "gpu" else Backend.XLA


class Dtype(Kind):
    """An element type a model stores weights, activations or its KV cache in."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT8_E4M3FN = "float8_e4m3fn"

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES[self]


DTYPE_BYTES = {Dtype.FLOAT32: 4, Dtype.BFLOAT16: 2, Dtype.FLOAT16: 2, Dtype.FLOAT8_E4M3FN: 1}
# What the executors compute in (FP8 is a storage type only).
RUN_DTYPES = (Dtype.FLOAT32, Dtype.BFLOAT16, Dtype.FLOAT16)
