"""A performance model for GPU pods: predicts TTFT, TPS, TPOT and amortised ms/token of a Plan.

Per stage and tick (one microbatch through one stage):
    time = max(bytes / bandwidth of the tier they live in, FLOPs / peak) + communication
- weights: the first microbatch of a round reads them from HBM; the other M - 1 re-read them at
  L2 bandwidth if the stage's weights (per device) fit its L2, else at HBM bandwidth again;
- KV cache: read (decode) or written (prefill) at HBM bandwidth;
- TP all-reduces (split t > 1): two per layer, latency + size * 2(t-1)/t / bus bandwidth, over
  NVLink inside a host, InfiniBand across;
- pipeline hops: latency + size / link bandwidth, InfiniBand where a hop crosses hosts;
- schedule: decode runs (D - 1) * P + M + S - 1 ticks for D tokens (P = max(M, S)); prefill
  runs M + S - 1 ticks (GPipe). No overlap of communication with compute is assumed.
All constants come from the mesh file, or from a bench_gpu.py calibration; none live in code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from jaxpart.config import ConfigError, Link, MeshConfig, ModelConfig
from jaxpart.memory import kv_bytes, layer_memory
from jaxpart.plan import Plan

# The seed's results table, verbatim: (method, TPS, "TPOT" ms).
SEED_ROWS = (("baseline", 12_800.0, 0.078), ("layerwise", 15_360.0, 0.065))


@dataclass(frozen=True)
class Constants:
    hbm_bytes_per_s: float
    l2_bytes_per_s: float
    l2_capacity: int
    peak_flops: float
    intra_host: Link
    inter_host: Link
    devices_per_host: int
    kernel_efficiency: float = 1.0  # achieved share of the bandwidth when streaming weights
    source: str = ""
    replaced: tuple[str, ...] = ()


def constants_from(mesh: MeshConfig, calibration: str | None = None) -> Constants:
    c = Constants(
        hbm_bytes_per_s=mesh.tiers["hbm"].bandwidth_bytes_per_s,
        l2_bytes_per_s=mesh.tiers["l2"].bandwidth_bytes_per_s,
        l2_capacity=mesh.tiers["l2"].capacity_bytes,
        peak_flops=mesh.peak_flops,
        intra_host=mesh.intra_host,
        inter_host=mesh.inter_host,
        devices_per_host=mesh.devices_per_host,
        source=f"meshes/{mesh.name}.toml",
    )
    return c if calibration is None else calibrate(c, calibration, mesh)


def calibrate(c: Constants, path: str, mesh: MeshConfig) -> Constants:
    """Replace datasheet figures with those scripts/bench_gpu.py measured on the mesh's kind of
    device (a file from another platform or device kind is refused)."""
    try:
        doc = json.loads(Path(path).read_text())
        platform, device = doc["platform"], doc["device"]
        hbm = float(doc["ceilings"]["copy_bytes_per_s"])
        flops = float(doc["ceilings"]["matmul_flops_per_s"])
        l2 = float(doc["l2"]["fits_l2"]["effective_bytes_per_s"])
        kernel = [r["pallas"]["bytes_per_s"] for r in doc["mlp"] if "pallas" in r]
    except FileNotFoundError:
        raise ConfigError(f"--calibration = {path!r}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"--calibration = {path!r}: not a bench_gpu.py result ({type(e).__name__}: {e})"
        ) from None
    if (platform, device) != (mesh.platform, mesh.device_kind):
        raise ConfigError(
            f"--calibration = {path!r}: measured on {device!r} ({platform}), but --mesh = "
            f"{mesh.name!r} is {mesh.device_kind!r} ({mesh.platform}); calibrate on that device"
        )
    efficiency = min(1.0, max(kernel) / hbm) if kernel else c.kernel_efficiency
    replaced = (
        f"hbm bandwidth {c.hbm_bytes_per_s / 1e12:.2f} -> {hbm / 1e12:.2f} TB/s",
        f"l2 bandwidth {c.l2_bytes_per_s / 1e12:.2f} -> {l2 / 1e12:.2f} TB/s",
        f"peak {c.peak_flops / 1e12:.0f} -> {flops / 1e12:.0f} TF/s",
        f"kernel efficiency {c.kernel_efficiency:.2f} -> {efficiency:.2f}",
    )
    return replace(
        c,
        hbm_bytes_per_s=hbm,
        l2_bytes_per_s=l2,
        peak_flops=flops,
        kernel_efficiency=efficiency,
        source=f"{c.source} calibrated by {Path(path).name} ({doc.get('device', '?')})",
        replaced=replaced,
    )


def allreduce_s(size: float, n: int, link: Link) -> float:
    """Ring all-reduce of ``size`` bytes over n devices: latency + size * 2(n-1)/n / busbw."""
    if n <= 1:
        return 0.0
    return link.allreduce_latency_s + size * 2 * (n - 1) / n / link.allreduce_busbw_bytes_per_s


def hop_s(size: float, link: Link) -> float:
    return link.latency_s + size / link.bandwidth_bytes_per_s


@dataclass(frozen=True)
class Tick:
    """One microbatch through the slowest stage: the parts of its time, in seconds."""

    weights_first_s: float  # weights from HBM (first microbatch of a round)
    weights_again_s: float  # weights re-read by the other microbatches (L2 if resident)
    kv_s: float
    compute_s: float
    allreduce_s: float
    hop_s: float
    resident_in_l2: bool

    def seconds(self, microbatches: int) -> float:
        """Mean time of a tick over a round of ``microbatches``."""
        again = (microbatches - 1) / microbatches
        first = 1 / microbatches
        mem = first * self.weights_first_s + again * self.weights_again_s + self.kv_s
        return max(mem, self.compute_s) + self.allreduce_s + self.hop_s


def layer_flops(cfg: ModelConfig, rows: int, tokens: int, attended: float, split: int = 1) -> float:
    """One layer on one device: the matmuls (2 x rows x tokens x params / t), plus QK and PV
    (2 x 2 x rows x tokens x attended positions x attention width / t)."""
    mem = layer_memory(cfg, split)
    width = cfg.n_heads * cfg.head_dim // split
    return 2 * rows * tokens * mem.params / split + 4 * rows * tokens * attended * width


def decode_step_flops(cfg: ModelConfig, batch: int, attended: float) -> float:
    """A whole decode step on one device: every layer, and the LM head."""
    return cfg.n_layers * layer_flops(cfg, batch, 1, attended) + 2 * batch * cfg.d_model * cfg.vocab


def _hop_link(plan: Plan, c: Constants) -> Link:
    hosts = [s.devices[0] // c.devices_per_host for s in plan.stages]
    crosses = any(a != b for a, b in zip(hosts, hosts[1:], strict=False))
    return c.inter_host if crosses else c.intra_host


def tick(
    cfg: ModelConfig,
    plan: Plan,
    c: Constants,
    rows: int,
    tokens: int,
    context: float,
    prefill: bool,
) -> Tick:
    """Cost of ``rows`` sequences x ``tokens`` positions through the plan's slowest stage."""
    n, t = max(len(s.layers) for s in plan.stages), plan.split
    mem = layer_memory(cfg, t)
    nbytes, d = cfg.dtype_bytes, cfg.d_model
    weights = n * mem.weight_bytes
    resident = weights + n * mem.decode_working_bytes <= c.l2_capacity
    stream = c.hbm_bytes_per_s * c.kernel_efficiency
    again_bw = c.l2_bytes_per_s * c.kernel_efficiency if resident else stream
    # KV: decode reads the context's keys and values; prefill writes the prompt's.
    kv_positions = tokens if prefill else context
    kv = n * kv_bytes(cfg, rows, kv_positions, t)
    # Causal prefill attends to half its prompt on average; a decode step to the context.
    flops = n * layer_flops(cfg, rows, tokens, tokens / 2 if prefill else context, t)
    activation = rows * tokens * d * nbytes
    tensor_link = c.intra_host if t <= c.devices_per_host else c.inter_host
    return Tick(
        weights_first_s=weights / stream,
        weights_again_s=weights / again_bw,
        kv_s=kv / c.hbm_bytes_per_s,
        compute_s=flops / c.peak_flops,
        allreduce_s=2 * n * allreduce_s(activation, t, tensor_link),
        hop_s=hop_s(activation, _hop_link(plan, c)) if plan.n_stages > 1 else 0.0,
        resident_in_l2=resident,
    )


@dataclass(frozen=True)
class Prediction:
    name: str
    devices: int
    ttft_ms: float
    tps: float
    tpot_ms: float
    ms_per_token_amortized: float
    microbatches: int
    decode_tick: dict = field(default_factory=dict)
    source: str = "predicted"

    def to_dict(self) -> dict:
        return asdict(self)


def predict(
    name: str,
    cfg: ModelConfig,
    plan: Plan,
    c: Constants,
    *,
    batch: int,
    prompt_len: int,
    gen_len: int,
    microbatches: int,
) -> Prediction:
    """TTFT, TPS, TPOT and amortised ms/token of ``plan`` for one batch, by the model above."""
    if gen_len < 2:
        raise ConfigError(f"--gen-len = {gen_len}: the model predicts decoding, needs >= 2")
    per_replica = batch // plan.data_parallel
    if per_replica % microbatches or per_replica < microbatches:
        raise ConfigError(
            f"--microbatches = {microbatches}: must divide the {per_replica} sequences of "
            f"each of {plan.data_parallel} replica(s)"
        )
    rows, S, M = per_replica // microbatches, plan.n_stages, microbatches
    steps = gen_len - 1
    context = prompt_len + steps / 2  # the mean context a decode step attends over
    pre = tick(cfg, plan, c, rows, prompt_len, prompt_len, prefill=True)
    dec = tick(cfg, plan, c, rows, 1, context, prefill=False)
    period = max(M, S)
    decode_s = ((steps - 1) * period + M + S - 1) * dec.seconds(M)
    ttft_s = (M + S - 1) * pre.seconds(M)
    tps = batch * steps / decode_s
    return Prediction(
        name=name,
        devices=plan.n_devices,
        ttft_ms=1e3 * ttft_s,
        tps=tps,
        tpot_ms=1e3 * decode_s / steps,
        ms_per_token_amortized=1e3 / tps,
        microbatches=M,
        decode_tick={
            (k[:-2] + "_us" if k.endswith("_s") else k): (v * 1e6 if k.endswith("_s") else v)
            for k, v in asdict(dec).items()
        },
    )


def floor(
    cfg: ModelConfig, c: Constants, n_devices: int, *, batch: int, prompt_len: int, gen_len: int
) -> dict:
    """The least time a decode step can take: every weight and the whole KV cache read once,
    spread perfectly over every device's HBM (or every FLOP at peak, if that is longer)."""
    mem = layer_memory(cfg)
    context = prompt_len + (gen_len - 1) / 2
    weights = cfg.n_layers * mem.weight_bytes
    kv = cfg.n_layers * kv_bytes(cfg, batch, context)
    flops = 2 * batch * cfg.n_layers * mem.params
    step_s = max(
        (weights + kv) / (n_devices * c.hbm_bytes_per_s), flops / (n_devices * c.peak_flops)
    )
    return {
        "floor_tpot_ms": 1e3 * step_s,
        "max_tps": batch / step_s,
        "floor_ms_per_token_amortized": 1e3 * step_s / batch,
        "weight_bytes": weights,
        "kv_bytes": kv,
        "context": context,
    }


def verdicts(fl: dict) -> list[dict]:
    """Is each of the seed's figures possible on this mesh? TPOT read both ways."""
    out = []
    for method, tps, tpot in SEED_ROWS:
        out.append(
            {
                "method": method,
                "claimed_tps": tps,
                "claimed_tpot_ms": tpot,
                "tps_possible": tps <= fl["max_tps"],
                "tpot_as_latency_possible": tpot >= fl["floor_tpot_ms"],
                "tpot_as_amortized_possible": tpot >= fl["floor_ms_per_token_amortized"],
            }
        )
    return out


def why(layerwise: Prediction, baseline: Prediction) -> str:
    """The term that decides, per decode tick: weight re-reads vs all-reduces (and KV)."""
    lw, base = layerwise.decode_tick, baseline.decode_tick
    return (
        f"layer-wise re-reads its weights for each of {layerwise.microbatches} microbatches "
        f"({lw['weights_again_us']:.0f} us a tick from {'L2' if lw['resident_in_l2'] else 'HBM'}"
        f", KV {lw['kv_us']:.0f} us); the baseline pays {base['allreduce_us']:.0f} us of "
        f"all-reduces a tick (KV {base['kv_us']:.0f} us)"
    )


def scaled_model(cfg: ModelConfig, key: str, value: int) -> ModelConfig:
    """The model with one setting changed; d_model keeps head_dim and the MLP ratio."""
    if key == "d_model":
        heads, rem = divmod(value, cfg.head_dim)
        if rem or heads < 1:
            raise ConfigError(
                f"--sweep d_model={value}: must be a multiple of head_dim = {cfg.head_dim}"
            )
        group = cfg.n_heads // cfg.n_kv_heads  # query heads per K/V head, kept
        if heads % group:
            raise ConfigError(
                f"--sweep d_model={value}: its {heads} heads must be a multiple of the "
                f"{group} query heads a K/V head serves"
            )
        return cfg.replace(
            name=f"{cfg.name}@d{value}",
            d_model=value,
            n_heads=heads,
            n_kv_heads=heads // group,
            d_ff=value * cfg.d_ff // cfg.d_model,
        )
    if key == "batch":
        return cfg.replace(name=f"{cfg.name}@b{value}", batch=value)
    raise ConfigError(f"--sweep {key}=...: sweeps d_model or batch")


def parse_sweep(text: str) -> tuple[str, list[int]]:
    key, sep, values = text.partition("=")
    try:
        numbers = [int(v) for v in values.split(",")] if sep else []
    except ValueError:
        numbers = []
    if not numbers or any(n <= 0 for n in numbers):
        raise ConfigError(f"--sweep = {text!r}: expected NAME=V1,V2,... e.g. d_model=1024,2048")
    return key.strip(), numbers


def crossover(rows: list[dict], key: str) -> str:
    """Where the layer-wise / baseline TPS ratio crosses 1, in words."""
    if not rows:
        return f"no value of {key} could be planned both ways"
    for a, b in zip(rows, rows[1:], strict=False):
        if (a["ratio"] >= 1) != (b["ratio"] >= 1):
            winner_low = "layer-wise" if a["ratio"] >= 1 else "the baseline"
            return (
                f"crossover between {key} = {a['value']} and {b['value']}: {winner_low} "
                f"wins at {key} <= {a['value']}"
            )
    if all(r["ratio"] >= 1 for r in rows):
        return f"layer-wise wins over the whole range of {key}"
    return f"layer-wise never overtakes the baseline for {key} in this range"
