"""The mesh: the hardware (devices, hosts, memory tiers, links, peak FLOP/s) and the timing
table of what its kernels achieve, from a TOML file. No jax."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from jaxpart.config.errors import ConfigError
from jaxpart.config.fields import Fields, positive_int, positive_number, read_toml
from jaxpart.config.files import is_shipped, resolve

TIER_NAMES = ("smem", "l2", "hbm")  # smallest and fastest first


@dataclass(frozen=True)
class Tier:
    name: str
    capacity_bytes: int  # per device
    bandwidth_bytes_per_s: float  # per device
    sm_count: int = 1  # smem only: the multiprocessors that hold one (a kernel's parallel width)


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth_bytes_per_s: float  # per device, per direction
    latency_s: float
    allreduce_latency_s: float
    allreduce_busbw_bytes_per_s: float


@dataclass(frozen=True)
class Timing:
    """What a device's kernels achieve, for the performance model (``jaxpart.perf.predict``); each
    mesh file states its figures and their sources. The defaults are the datasheet taken at
    its word: every peak reached, nothing paid per kernel."""

    hbm_efficiency: float = 1.0  # share of HBM bandwidth a streaming kernel (GEMV, KV read) gets
    compute_efficiency: float = 1.0  # share of peak_flops a large GEMM gets
    attention_efficiency: float = 1.0  # share of peak_flops a flash-attention prefill gets
    kv_efficiency: float = 1.0  # share of HBM bandwidth a decode attention kernel's KV reads get
    fp8_peak_flops: float = 0.0  # dense FP8 peak; 0: as peak_flops
    fp8_compute_efficiency: float = 1.0  # share of fp8_peak_flops an FP8 GEMM gets
    effective_l2_bytes: int = 0  # what stays at L2 speed across kernels; 0: the l2 tier's size
    launch_s: float = 0.0  # per kernel: launch and the gap before the next
    step_s: float = 0.0  # per decode step, outside the kernels (sampling, host work)
    request_s: float = 0.0  # per batch before its first token (runtime setup, host sync)
    source: str = "datasheet peaks"


@dataclass(frozen=True)
class MeshConfig:
    name: str
    platform: str  # "cpu" or "gpu"
    device_kind: str
    hosts: int
    devices_per_host: int
    peak_flops: float  # per device, dense, at the model dtype the file names
    tiers: dict[str, Tier]
    intra_host: Link
    inter_host: Link
    default_capacity: str
    source: str = "<memory>"
    timing: Timing = Timing()
    nics_per_host: int | None = None  # inter-host NICs a host's devices share; None: one each

    def __post_init__(self) -> None:
        positive_int(self.source, "hosts", self.hosts)
        positive_int(self.source, "devices_per_host", self.devices_per_host)
        if self.nics_per_host is None:
            object.__setattr__(self, "nics_per_host", self.devices_per_host)
        positive_int(self.source, "nics_per_host", self.nics_per_host)
        positive_number(self.source, "peak_flops", self.peak_flops)
        if self.platform not in ("cpu", "gpu"):
            raise ConfigError(
                f"{self.source}: field 'platform' = {self.platform!r}: use 'cpu' or 'gpu'"
            )
        missing = [t for t in TIER_NAMES if t not in self.tiers]
        if missing:
            raise ConfigError(f"{self.source}: missing field 'tiers.{missing[0]}'")
        caps = [self.tiers[t].capacity_bytes for t in TIER_NAMES]
        if caps != sorted(caps):
            raise ConfigError(
                f"{self.source}: field 'tiers' capacities {caps}: must grow smem <= l2 <= hbm"
            )
        if self.default_capacity not in TIER_NAMES:
            raise ConfigError(
                f"{self.source}: field 'default_capacity' = {self.default_capacity!r}: "
                f"use one of {list(TIER_NAMES)}"
            )

    @property
    def n_devices(self) -> int:
        return self.hosts * self.devices_per_host

    def sized(self, devices: int) -> MeshConfig:
        """The same kind of device and links, ``devices`` of them (hosts of devices_per_host)."""
        per_host = min(devices, self.devices_per_host)
        if devices % per_host:
            raise ConfigError(
                f"devices = {devices}: must be a multiple of {self.name}'s {per_host} per host"
            )
        return dataclasses.replace(
            self,
            name=f"{self.name}[{devices}]",
            hosts=devices // per_host,
            devices_per_host=per_host,
            nics_per_host=min(self.nics_per_host, per_host),
        )


def _load_link(src: str, table: dict[str, Any], name: str) -> Link:
    f = Fields(src, table, f"links.{name}.")
    link = Link(
        name=name,
        bandwidth_bytes_per_s=float(f.size("bandwidth_per_s")),
        latency_s=f.number("latency_us") * 1e-6,
        allreduce_latency_s=f.number("allreduce_latency_us") * 1e-6,
        allreduce_busbw_bytes_per_s=float(f.size("allreduce_busbw_per_s")),
    )
    f.done()
    return link


def load_mesh(name_or_path: str) -> MeshConfig:
    path = resolve(name_or_path, "meshes")
    data = read_toml(path)
    src = str(path.name if is_shipped(path) else path)
    top = Fields(src, data, "")
    m = Fields(src, top.take("mesh"), "mesh.")
    tiers_table = top.take("tiers")
    links = Fields(src, top.take("links"), "links.")
    timing = _load_timing(src, top.take("timing", None))
    top.done()
    tiers = {}
    for tier_name, table in Fields(src, tiers_table, "tiers.").table.items():
        if tier_name not in TIER_NAMES:
            raise ConfigError(f"{src}: unknown field 'tiers.{tier_name}' (use {list(TIER_NAMES)})")
        t = Fields(src, table, f"tiers.{tier_name}.")
        sm_count = t.take("sm_count", 1) if tier_name == "smem" else 1
        if isinstance(sm_count, bool) or not isinstance(sm_count, int) or sm_count < 1:
            raise ConfigError(
                f"{src}: field 'tiers.smem.sm_count' = {sm_count!r}: must be an integer >= 1"
            )
        tiers[tier_name] = Tier(
            tier_name, t.size("capacity"), float(t.size("bandwidth_per_s")), sm_count
        )
        t.done()
    mesh = MeshConfig(
        name=m.take("name", path.name.removesuffix(".toml")),
        platform=m.take("platform"),
        device_kind=m.take("device_kind"),
        hosts=m.take("hosts"),
        devices_per_host=m.take("devices_per_host"),
        nics_per_host=m.take("nics_per_host", None),
        peak_flops=m.take("peak_flops"),
        tiers=tiers,
        intra_host=_load_link(src, links.take("intra_host"), "intra_host"),
        inter_host=_load_link(src, links.take("inter_host"), "inter_host"),
        default_capacity=m.take("default_capacity"),
        source=src,
        timing=timing,
    )
    m.done()
    links.done()
    return mesh


def _load_timing(src: str, table: dict[str, Any] | None) -> Timing:
    if table is None:
        return Timing()
    f = Fields(src, table, "timing.")
    values = {}
    names = ("hbm_efficiency", "compute_efficiency", "attention_efficiency", "kv_efficiency")
    for name in (*names, "fp8_compute_efficiency"):
        if name == "fp8_compute_efficiency" and name not in f.table:
            continue
        value = f.number(name)
        if not 0 < value <= 1:
            raise ConfigError(f"{src}: field 'timing.{name}' = {value!r}: must be in (0, 1]")
        values[name] = value
    timing = Timing(
        **values,
        fp8_peak_flops=f.number("fp8_peak_flops") if "fp8_peak_flops" in f.table else 0.0,
        effective_l2_bytes=f.size("effective_l2", 0),
        launch_s=f.number("launch_us") * 1e-6,
        step_s=f.number("step_us") * 1e-6,
        request_s=f.number("request_us") * 1e-6,
        source=f.take("source"),
    )
    f.done()
    return timing
