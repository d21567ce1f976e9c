"""Engine profiles: what the software running a plan does, where engines differ (all-reduce
dtype and algorithm, head split, FP8 GEMMs, L2 hints, microbatch schedule, its fixed costs),
read from the shipped ``engines.toml``. The mesh file says what the hardware is; a profile says
how an engine uses it. A profile's ``fitted`` table holds the costs no datasheet gives (per
kernel, per all-reduce, per decode step and sequence), fitted by ``scripts/fit_constants.py``
on published measurements of that engine. No jax."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from jaxpart.config import ConfigError
from jaxpart.config.fields import Fields, read_toml
from jaxpart.config.files import data_root
from jaxpart.planning.capacity import Memory

SCHEDULES = ("pipelined", "flushed")
ALLREDUCE_DTYPES = {"float32": 4, "activation": 0}  # 0: the activations' bytes
# The costs a profile's [engine.NAME.fitted] table may set, in microseconds (Engine fields in s).
FITTED = {
    "kernel_us": "kernel_s",
    "allreduce_us": "allreduce_s",
    "allreduce_step_us": "allreduce_step_s",
    "step_us": "step_s",
    "seq_step_us": "seq_step_s",
}


@dataclass(frozen=True)
class Engine:
    """How an engine runs a plan: the bytes per element of its tensor-parallel all-reduce (0:
    the activations' dtype), whether its LM head is split over the tensor ranks, whether FP8
    weights run FP8 GEMMs, whether its MLP keeps weights in L2 (eviction hints), and its
    microbatch schedule; and its fitted costs, in seconds (None: the mesh file's figure):
    per kernel (``kernel_s``, in place of the mesh's launch cost), per tensor-parallel
    all-reduce inside a host (``allreduce_s`` in place of the link's latency, plus
    ``allreduce_step_s`` per ring step, 2(t - 1) of them), per decode step (``step_s``) and per
    decode step and sequence (``seq_step_s``)."""

    name: str
    allreduce_bytes: int
    head_split: bool
    fp8_gemm: bool
    l2_hints: bool
    schedule: str = "pipelined"
    kernel_s: float | None = None
    allreduce_s: float | None = None
    allreduce_step_s: float = 0.0
    step_s: float | None = None
    seq_step_s: float = 0.0
    fitted_keys: tuple[str, ...] = ()  # the costs its [engine.NAME.fitted] table sets
    memory_fraction: float = 1.0
    kv_free_fraction: float = 1.0
    edge_stages: bool = False
    paged_kv: bool = False
    # FP8 weights: the activations quantised in passes of their own before each FP8 GEMM (a
    # read of the 16-bit input, a write of its e4m3 copy), rather than fused into the norm or
    # activation kernel before it
    fp8_quantize_pass: bool = False

    @property
    def memory(self) -> Memory:
        """How it uses a device's memory, for ``planning.capacity``."""
        return Memory(
            memory_fraction=self.memory_fraction,
            kv_free_fraction=self.kv_free_fraction,
            edge_stages=self.edge_stages,
            head_split=self.head_split,
            paged_kv=self.paged_kv,
        )

    @property
    def fitted(self) -> dict[str, float]:
        """The fitted costs this profile sets, as engines.toml names them (microseconds)."""
        return {k: getattr(self, FITTED[k]) * 1e6 for k in self.fitted_keys}

    def with_fitted(self, values: dict[str, float]) -> Engine:
        """The profile with fitted costs replaced (engines.toml names, microseconds)."""
        return replace(self, **{FITTED[k]: v * 1e-6 for k, v in values.items()})


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
        fitted = _fitted(path.name, name, f.take("fitted", {}))
        out[name] = Engine(
            name=name,
            allreduce_bytes=ALLREDUCE_DTYPES[dtype],
            head_split=bool(f.take("head_split")),
            fp8_gemm=bool(f.take("fp8_gemm")),
            l2_hints=bool(f.take("l2_hints")),
            schedule=schedule,
            memory_fraction=_fraction(f, "memory_fraction", path.name, name),
            kv_free_fraction=_fraction(f, "kv_free_fraction", path.name, name),
            edge_stages=bool(f.take("edge_stages")),
            paged_kv=bool(f.take("paged_kv")),
            fp8_quantize_pass=bool(f.take("fp8_quantize_pass", False)),
            fitted_keys=tuple(fitted),
            **{FITTED[k]: v * 1e-6 for k, v in fitted.items()},
        )
        f.done()
    return out


def _fraction(f: Fields, key: str, file: str, name: str) -> float:
    value = f.take(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{file}: engine.{name}.{key} = {value!r}: must be in (0, 1]")
    return float(value)


def _fitted(file: str, name: str, table: dict) -> dict[str, float]:
    """An [engine.NAME.fitted] table: known keys, each a finite cost >= 0 in microseconds."""
    out = {}
    for key, value in table.items():
        where = f"{file}: engine.{name}.fitted.{key}"
        if key not in FITTED:
            raise ConfigError(f"{where}: unknown (use one of {sorted(FITTED)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigError(f"{where} = {value!r}: must be a number >= 0 (microseconds)")
        out[key] = float(value)
    return out


def engine(name: str) -> Engine:
    """The profile ``name`` (``--engine``): a one-line error naming the known ones otherwise."""
    known = engines()
    if name not in known:
        raise ConfigError(f"--engine = {name!r}: use one of {sorted(known)}")
    return known[name]
