"""Engine profiles: what the software running a plan does, where engines differ (all-reduce
dtype, head split, FP8 GEMMs, L2 hints, microbatch schedule), read from the shipped
``engines.toml``. The mesh file says what the hardware is; a profile says how an engine uses
it. No jax."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jaxpart.config import ConfigError
from jaxpart.config.fields import Fields, read_toml
from jaxpart.config.files import data_root

SCHEDULES = ("pipelined", "flushed")
ALLREDUCE_DTYPES = {"float32": 4, "activation": 0}  # 0: the activations' bytes


@dataclass(frozen=True)
class Engine:
    """How an engine runs a plan: the bytes per element of its tensor-parallel all-reduce (0:
    the activations' dtype), whether its LM head is split over the tensor ranks, whether FP8
    weights run FP8 GEMMs, whether its MLP keeps weights in L2 (eviction hints), and its
    microbatch schedule."""

    name: str
    allreduce_bytes: int
    head_split: bool
    fp8_gemm: bool
    l2_hints: bool
    schedule: str = "pipelined"


@lru_cache(maxsize=1)
def engines() -> dict[str, Engine]:
    """Every shipped profile, by name."""
    path = data_root() / "engines.toml"
    top = Fields(path.name, read_toml(path), "")
    table = top.take("engine")
    top.done()
    out = {}
    for name, fields in table.items():
        f = Fields(path.name, fields, f"engine.{name}.")
        dtype, schedule = f.take("allreduce_dtype"), f.take("schedule")
        if dtype not in ALLREDUCE_DTYPES or schedule not in SCHEDULES:
            raise ConfigError(f"{path.name}: engine.{name}: allreduce_dtype or schedule unknown")
        out[name] = Engine(
            name=name,
            allreduce_bytes=ALLREDUCE_DTYPES[dtype],
            head_split=bool(f.take("head_split")),
            fp8_gemm=bool(f.take("fp8_gemm")),
            l2_hints=bool(f.take("l2_hints")),
            schedule=schedule,
        )
        f.done()
    return out


def engine(name: str) -> Engine:
    """The profile ``name`` (``--engine``): a one-line error naming the known ones otherwise."""
    known = engines()
    if name not in known:
        raise ConfigError(f"--engine = {name!r}: use one of {sorted(known)}")
    return known[name]
