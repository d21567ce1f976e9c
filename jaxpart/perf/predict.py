"""A performance model for GPU pods: predicts TTFT, TPS, TPOT and amortised ms/token of a Plan.

It times the kernels a stage runs, one microbatch at a time (a *tick*):
    kernel time = max(HBM bytes / (HBM bandwidth x hbm_efficiency),
                      FLOPs / (peak x compute_efficiency, or attention_efficiency)) + launch
for each layer's norms, Q/K/V projection, attention, output projection and MLP, and the LM head
on the last stage. Added to the kernels, with nothing overlapped (each collective's output feeds
the next kernel, so XLA's latency-hiding scheduler has nothing to hide it behind):
- TP all-reduces (split t > 1), two per layer, of the bytes the executor really sends (f32 in
  jaxpart): latency + size * 2(t-1)/t / bus bandwidth over NVLink inside a host; a split that
  spans hosts reduces hierarchically (inside each host, then each shard across the hosts over
  all of a host's NICs at once: ``tensor_allreduce_s``);
- pipeline hops: latency + size / link bandwidth;
- per decode step, a fixed cost outside the kernels (sampling, host work).
L2: a layer-wise stage's MLP weights are re-read from L2 by microbatches 2..M only where the
kernels keep them there (jaxpart's Pallas MLP loads weights evict_last) and the stage's weights
fit the mesh's *effective* L2. Schedule: decode runs (D - 1) * P + M + S - 1 ticks for D tokens
(P = max(M, S)); prefill runs M + S - 1 ticks (GPipe).

Every constant (peaks, achieved efficiencies, launch and step costs, links) comes from the mesh
file, with its sources, or from a bench_gpu.py calibration; none live in code. The same model,
with the same constants per GPU type, is checked against published measurements
(``jaxpart.perf.validation``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jaxpart.config import ConfigError, Link, MeshConfig, Method, ModelConfig, RunShape
from jaxpart.perf.engines import Engine, engine
from jaxpart.planning.memory import (
    kv_bytes,
    kv_heads_per_device,
    layer_memory,
    layer_params,
    layer_weight_bytes,
)
from jaxpart.planning.plan import Plan

# The seed's results table, verbatim: (method, TPS, "TPOT" ms).
SEED_ROWS = ((Method.BASELINE, 12_800.0, 0.078), (Method.LAYERWISE, 15_360.0, 0.065))


@dataclass(frozen=True)
class Constants:
    hbm_bytes_per_s: float
    l2_bytes_per_s: float
    l2_capacity: int  # effective: what stays at L2 speed across kernels
    peak_flops: float
    intra_host: Link
    inter_host: Link
    devices_per_host: int
    nics_per_host: int = 1  # inter-host NICs a host's devices share
    fp8_peak_flops: float = 0.0  # 0: as peak_flops
    hbm_efficiency: float = 1.0
    compute_efficiency: float = 1.0
    attention_efficiency: float = 1.0
    kv_efficiency: float = 1.0
    fp8_compute_efficiency: float = 1.0
    launch_s: float = 0.0
    step_s: float = 0.0
    request_s: float = 0.0
    allreduce_step_s: float = 0.0  # per ring step of an all-reduce inside a host (an engine's)
    seq_step_s: float = 0.0  # per decode step and sequence (an engine's)
    source: str = ""
    replaced: tuple[str, ...] = ()


# jaxpart's own executors, the default profile (jaxpart/data/engines.toml has every profile).
JAXPART = engine("jaxpart")


def constants_from(mesh: MeshConfig, calibration: str | None = None) -> Constants:
    t = mesh.timing
    c = Constants(
        hbm_bytes_per_s=mesh.tiers["hbm"].bandwidth_bytes_per_s,
        l2_bytes_per_s=mesh.tiers["l2"].bandwidth_bytes_per_s,
        l2_capacity=t.effective_l2_bytes or mesh.tiers["l2"].capacity_bytes,
        peak_flops=mesh.peak_flops,
        fp8_peak_flops=t.fp8_peak_flops or mesh.peak_flops,
        intra_host=mesh.intra_host,
        inter_host=mesh.inter_host,
        devices_per_host=mesh.devices_per_host,
        nics_per_host=mesh.nics_per_host,
        hbm_efficiency=t.hbm_efficiency,
        compute_efficiency=t.compute_efficiency,
        attention_efficiency=t.attention_efficiency,
        kv_efficiency=t.kv_efficiency,
        fp8_compute_efficiency=t.fp8_compute_efficiency,
        launch_s=t.launch_s,
        step_s=t.step_s,
        request_s=t.request_s,
        source=f"meshes/{mesh.name}.toml",
    )
    return c if calibration is None else calibrate(c, calibration, mesh)


def calibrate(c: Constants, path: str, mesh: MeshConfig) -> Constants:
    """Replace the mesh file's figures with those scripts/bench_gpu.py measured on the mesh's
    kind of device (a file from another platform or device kind is refused): the streaming
    efficiency from its fastest MLP kernel (or its device copy), the GEMM efficiency from its
    matmul, L2 bandwidth, and the launch cost."""
    try:
        doc = json.loads(Path(path).read_text())
        platform, device = doc["platform"], doc["device"]
        copy = float(doc["ceilings"]["copy_bytes_per_s"])
        flops = float(doc["ceilings"]["matmul_flops_per_s"])
        l2 = float(doc["l2"]["fits_l2"]["effective_bytes_per_s"])
        kernel = [r["pallas"]["bytes_per_s"] for r in doc["mlp"] if "pallas" in r]
        launch = doc.get("launch", {}).get("per_launch_s")
    except FileNotFoundError:
        raise ConfigError(
            f"--calibration = {path!r}: no such file (scripts/bench_gpu.py writes it on a GPU)"
        ) from None
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as e:
        raise ConfigError(
            f"--calibration = {path!r}: not a bench_gpu.py result ({type(e).__name__}: {e})"
        ) from None
    except OSError as e:
        raise ConfigError(f"--calibration = {path!r}: cannot be read: {e.strerror or e}") from None
    if (platform, device) != (mesh.platform, mesh.device_kind):
        raise ConfigError(
            f"--calibration = {path!r}: measured on {device!r} ({platform}), but --mesh = "
            f"{mesh.name!r} is {mesh.device_kind!r} ({mesh.platform}); calibrate on that device"
        )
    figures = {"copy_bytes_per_s": copy, "matmul_flops_per_s": flops, "l2": l2}
    figures |= {f"mlp[{i}].pallas.bytes_per_s": v for i, v in enumerate(kernel)}
    for name, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e30:
            raise ConfigError(
                f"--calibration = {path!r}: field {name!r} = {value!r}: must be a finite "
                "positive number"
            )
    if launch is not None and (
        isinstance(launch, bool) or not isinstance(launch, int | float) or not 0 <= launch < 1
    ):
        raise ConfigError(
            f"--calibration = {path!r}: field 'launch.per_launch_s' = {launch!r}: must be a "
            "number of seconds in [0, 1)"
        )
    hbm_eff = min(1.0, max([copy, *kernel]) / c.hbm_bytes_per_s)
    compute_eff = min(1.0, flops / c.peak_flops)
    launch_s = float(launch) if launch is not None else c.launch_s
    replaced = (
        f"hbm efficiency {c.hbm_efficiency:.2f} -> {hbm_eff:.2f}",
        f"compute efficiency {c.compute_efficiency:.2f} -> {compute_eff:.2f}",
        f"l2 bandwidth {c.l2_bytes_per_s / 1e12:.2f} -> {l2 / 1e12:.2f} TB/s",
        f"launch {c.launch_s * 1e6:.1f} -> {launch_s * 1e6:.1f} us",
    )
    return replace(
        c,
        hbm_efficiency=hbm_eff,
        compute_efficiency=compute_eff,
        l2_bytes_per_s=l2,
        launch_s=launch_s,
        source=f"{c.source} calibrated by {Path(path).name} ({device})",
        replaced=replaced,
    )


def with_engine(c: Constants, engine: Engine) -> Constants:
    """The constants as ``engine`` pays them: its fitted costs (engines.toml) in place of the
    mesh file's launch, step and all-reduce latency figures."""
    changes: dict = {"allreduce_step_s": engine.allreduce_step_s, "seq_step_s": engine.seq_step_s}
    if engine.kernel_s is not None:
        changes["launch_s"] = engine.kernel_s
    if engine.step_s is not None:
        changes["step_s"] = engine.step_s
    if engine.allreduce_s is not None:
        changes["intra_host"] = replace(c.intra_host, allreduce_latency_s=engine.allreduce_s)
    return replace(c, **changes)


def allreduce_s(size: float, n: int, link: Link) -> float:
    """Ring all-reduce of ``size`` bytes over n devices: latency + size * 2(n-1)/n / busbw."""
    if n <= 1:
        return 0.0
    return link.allreduce_latency_s + size * 2 * (n - 1) / n / link.allreduce_busbw_bytes_per_s


def tensor_allreduce_s(size: float, t: int, c: Constants) -> float:
    """An all-reduce of ``size`` bytes over a tensor split of ``t`` devices. Inside one host:
    a ring over its links. Across hosts (t > devices per host), hierarchically, as NCCL and
    the engines run it: a reduce-scatter and an all-gather inside each host (the volume of one
    all-reduce over its g devices), and between them each host's g shards all-reduced across
    the h hosts, in parallel over the host's NICs, so each NIC carries size / min(NICs, g)."""
    g = c.devices_per_host
    if t <= g:
        return allreduce_s(size, t, c.intra_host) + ring_steps_s(t, c)
    hosts = t // g
    inter = c.inter_host
    per_nic = size / min(c.nics_per_host, g)
    across = inter.allreduce_latency_s + per_nic * 2 * (hosts - 1) / hosts / (
        inter.allreduce_busbw_bytes_per_s
    )
    return allreduce_s(size, g, c.intra_host) + ring_steps_s(g, c) + across


def ring_steps_s(n: int, c: Constants) -> float:
    """An engine's latency per ring step inside a host: 2(n - 1) steps of a ring all-reduce."""
    return 2 * (n - 1) * c.allreduce_step_s if n > 1 else 0.0


def hop_s(size: float, link: Link) -> float:
    return link.latency_s + size / link.bandwidth_bytes_per_s


def layer_flops(cfg: ModelConfig, rows: int, tokens: int, attended: float, split: int = 1) -> float:
    """One layer on one device: the matmuls (2 x rows x tokens x params / t), plus QK and PV
    (2 x 2 x rows x tokens x attended positions x attention width / t)."""
    width = cfg.n_heads * cfg.head_dim // split
    return 2 * rows * tokens * layer_params(cfg) / split + 4 * rows * tokens * attended * width


def decode_step_flops(cfg: ModelConfig, batch: int, attended: float) -> float:
    """A whole decode step on one device: every layer, and the LM head."""
    return cfg.n_layers * layer_flops(cfg, batch, 1, attended) + 2 * batch * cfg.d_model * cfg.vocab


@dataclass(frozen=True)
class Kernel:
    name: str  # norms | projections | attention | mlp | head
    hbm_bytes: float
    flops: float
    l2_bytes: float = 0.0  # re-read from L2 instead of HBM (microbatches after the first)
    attention: bool = False
    kv_stream: bool = False  # a decode attention reading the KV cache (at kv_efficiency)


def kernel_s(k: Kernel, c: Constants, fp8: bool) -> float:
    """max(memory time, compute time) + launch, at the mesh's achieved efficiencies."""
    share = c.kv_efficiency if k.kv_stream else c.hbm_efficiency
    memory = k.hbm_bytes / (c.hbm_bytes_per_s * share) + k.l2_bytes / c.l2_bytes_per_s
    if k.attention:
        peak = c.peak_flops * c.attention_efficiency
    elif fp8:
        peak = c.fp8_peak_flops * c.fp8_compute_efficiency
    else:
        peak = c.peak_flops * c.compute_efficiency
    return max(memory, k.flops / peak) + c.launch_s


def stage_kernels(
    cfg: ModelConfig,
    n_layers: int,
    split: int,
    rows: int,
    tokens: int,
    context: float,
    prefill: bool,
    last: bool,
    engine: Engine,
) -> list[Kernel]:
    """The kernels of one tick of a stage of ``n_layers`` layers: per layer two norms, the
    Q/K/V and output projections, attention and the MLP (SwiGLU's gate and up as one kernel),
    and with FP8 weights, where the engine quantises activations in passes of their own, four
    quantisations; on the last stage the LM head (16-bit) over the last position of each row."""
    t, d, nb = split, cfg.d_model, cfg.dtype_bytes
    wb = cfg.weight_bytes_each
    q = cfg.q_width // t
    kv = kv_heads_per_device(cfg, t) * cfg.head_dim
    f = cfg.d_ff // t
    n_tok = rows * tokens
    act = n_tok * d * nb
    per_layer = [
        Kernel("norms", 2 * act, 0.0),
        Kernel("norms", 2 * act, 0.0),
        Kernel(
            "projections",
            d * (q + 2 * kv) * wb + act + n_tok * (q + 2 * kv) * nb,
            2 * n_tok * d * (q + 2 * kv),
        ),
        Kernel("projections", q * d * wb + n_tok * q * nb + act, 2 * n_tok * q * d),
    ]
    # a query attends to at most its layer's window: the mean over the model's layers
    windows = cfg.layer_windows or (cfg.sliding_window,) * cfg.n_layers

    def within(span: float) -> float:
        return sum(min(span, w) if w else span for w in windows) / len(windows)

    if prefill:  # causal: each query attends to half the prompt on average
        attn_bytes = n_tok * (2 * q + 2 * kv) * nb + kv_bytes(cfg, rows, tokens, t)
        attn_flops = 4 * n_tok * within(tokens / 2) * q
    else:  # read the context's (window's) keys and values, write the new ones
        seen = within(context)
        attn_bytes = kv_bytes(cfg, rows, seen, t) + n_tok * (2 * q + 2 * kv) * nb
        attn_flops = 4 * n_tok * seen * q
        if cfg.kv_bytes_each == 1:  # an FP8 cache: each K and V read widened and scaled
            attn_flops += 2 * 2 * rows * seen * kv
    per_layer.append(
        Kernel("attention", attn_bytes, attn_flops, attention=True, kv_stream=not prefill)
    )
    up = (cfg.mlp_matrices - 1) * d * f
    per_layer.append(Kernel("mlp", up * wb + act + n_tok * f * nb, 2 * n_tok * up))
    per_layer.append(Kernel("mlp", f * d * wb + n_tok * f * nb + act, 2 * n_tok * f * d))
    if cfg.fp8 and engine.fp8_gemm and engine.fp8_quantize_pass:
        # each FP8 GEMM's input quantised in a pass of its own: the attention's input, the
        # output projection's, the MLP's and the down projection's (amax, divide, round)
        for width in (d, q, d, f):
            per_layer.append(Kernel("fp8 quantize", n_tok * width * (nb + 1), 3 * n_tok * width))
    kernels = per_layer * n_layers
    if last:
        vocab = cfg.vocab // t if engine.head_split else cfg.vocab
        head = d * vocab * cfg.embed_bytes_each + rows * vocab * 4
        kernels.append(Kernel("head", head, 2 * rows * d * vocab))
    return kernels


@dataclass(frozen=True)
class Tick:
    """One microbatch through the slowest stage: its time, in seconds, by part."""

    parts: dict[str, float]  # Kernel.name -> seconds, launches included (a round's first)
    l2_saving_s: float  # what microbatches 2..M save by re-reading the MLP weights from L2
    allreduce_s: float
    hop_s: float
    resident_in_l2: bool

    @property
    def kernels_s(self) -> float:
        return sum(self.parts.values())

    def seconds(self, microbatches: int) -> float:
        """Mean time of a tick over a round of ``microbatches``."""
        again = (microbatches - 1) / microbatches
        return self.kernels_s - again * self.l2_saving_s + self.allreduce_s + self.hop_s


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
    engine: Engine = JAXPART,
) -> Tick:
    """Cost of ``rows`` sequences x ``tokens`` positions through the plan's slowest stage (the
    one with the most layers, or the last, which also runs the LM head)."""
    t = plan.split
    fp8 = engine.fp8_gemm and cfg.fp8
    candidates, most = [], max(len(s.layers) for s in plan.stages)
    for i, stage in enumerate(plan.stages):
        last = i == plan.n_stages - 1
        if not last and len(stage.layers) < most:
            continue
        n = len(stage.layers)
        kernels = stage_kernels(cfg, n, t, rows, tokens, context, prefill, last, engine)
        parts: dict[str, float] = {}
        for k in kernels:
            parts[k.name] = parts.get(k.name, 0.0) + kernel_s(k, c, fp8)
        # L2: the stage's MLP weights, read by every microbatch, stay in L2 only with eviction
        # hints and when the stage's weights fit the effective L2 beside the streaming KV.
        mlp_weights = n * cfg.mlp_matrices * cfg.d_model * (cfg.d_ff // t) * cfg.weight_bytes_each
        weights = n * layer_weight_bytes(cfg, t)
        resident = engine.l2_hints and not prefill and weights <= c.l2_capacity
        saving = 0.0
        if resident:
            hbm_bw = c.hbm_bytes_per_s * c.hbm_efficiency
            saving = max(0.0, mlp_weights / hbm_bw - mlp_weights / c.l2_bytes_per_s)
        candidates.append((sum(parts.values()) - saving, parts, saving, resident, n))
    _, parts, saving, resident, n = max(candidates, key=lambda x: x[0])
    element = engine.allreduce_bytes or cfg.dtype_bytes
    reduced = rows * tokens * cfg.d_model * element
    activation = rows * tokens * cfg.d_model * cfg.dtype_bytes
    return Tick(
        parts=parts,
        l2_saving_s=saving,
        allreduce_s=2 * n * tensor_allreduce_s(reduced, t, c),
        hop_s=hop_s(activation, _hop_link(plan, c)) if plan.n_stages > 1 else 0.0,
        resident_in_l2=resident,
    )


@dataclass(frozen=True)
class TickTimes:
    """A decode tick of the slowest stage, in microseconds, by part: its kernels by kind
    (launches included), what re-reading the MLP weights from L2 saves microbatches 2..M,
    the TP all-reduces, the pipeline hop, and the mean tick over a round of M microbatches."""

    norms_us: float
    projections_us: float
    attention_us: float
    mlp_us: float
    head_us: float | None  # None: the stage runs no LM head (it is not the last)
    l2_saving_us: float
    allreduce_us: float
    hop_us: float
    tick_us: float
    resident_in_l2: bool

    @classmethod
    def of(cls, tk: Tick, microbatches: int) -> TickTimes:
        head = tk.parts.get("head")
        return cls(
            norms_us=1e6 * tk.parts["norms"],
            projections_us=1e6 * tk.parts["projections"],
            attention_us=1e6 * tk.parts["attention"],
            mlp_us=1e6 * tk.parts["mlp"],
            head_us=None if head is None else 1e6 * head,
            l2_saving_us=1e6 * tk.l2_saving_s,
            allreduce_us=1e6 * tk.allreduce_s,
            hop_us=1e6 * tk.hop_s,
            tick_us=1e6 * tk.seconds(microbatches),
            resident_in_l2=tk.resident_in_l2,
        )

    def kernel_parts(self) -> dict[str, float]:
        """The kernels' time by kind, in the order a layer runs them (the head last)."""
        out = {
            "norms": self.norms_us,
            "projections": self.projections_us,
            "attention": self.attention_us,
            "mlp": self.mlp_us,
        }
        if self.head_us is not None:
            out["head"] = self.head_us
        return out

    @property
    def kernels_us(self) -> float:
        return sum(self.kernel_parts().values())

    def parts(self) -> dict[str, float]:
        """Everything a tick adds up, by part: the kernels, the all-reduces and the hop (the L2
        saving comes off their sum)."""
        return self.kernel_parts() | {"allreduce": self.allreduce_us, "hop": self.hop_us}

    def to_dict(self) -> dict:
        """Each part as ``<part>_us`` (no ``head_us`` where the stage runs no head)."""
        return {k: v for k, v in asdict(self).items() if not (k == "head_us" and v is None)}


@dataclass(frozen=True)
class Prediction:
    name: str  # the method predicted, or a label (a published point's id)
    devices: int
    ttft_ms: float
    tps: float  # decode: tokens of the decode steps / their time
    tpot_ms: float
    ms_per_token_amortized: float
    microbatches: int
    e2e_ms: float  # the whole batch: prefill and every decode step
    decode_tick: TickTimes
    source: str = "predicted"

    def to_dict(self) -> dict:
        return asdict(self) | {"decode_tick": self.decode_tick.to_dict()}


def prefill_s(
    cfg: ModelConfig,
    plan: Plan,
    c: Constants,
    *,
    rows: int,
    prompt_len: int,
    microbatches: int,
    engine: Engine = JAXPART,
) -> float:
    """Time to the first token: the batch's fixed cost and M + S - 1 prefill ticks (GPipe)."""
    c = with_engine(c, engine)
    pre = tick(cfg, plan, c, rows, prompt_len, prompt_len, prefill=True, engine=engine)
    return c.request_s + (microbatches + plan.n_stages - 1) * pre.seconds(microbatches)


def predict(
    name: str,
    cfg: ModelConfig,
    plan: Plan,
    c: Constants,
    shape: RunShape,
    *,
    engine: Engine = JAXPART,
) -> Prediction:
    """TTFT, TPS, TPOT and amortised ms/token of ``plan`` for one batch of ``shape`` (its
    microbatches settled), by the model above."""
    batch, prompt_len, gen_len, microbatches = (
        shape.batch,
        shape.prompt_len,
        shape.gen_len,
        shape.microbatches,
    )
    if microbatches is None:
        raise ValueError("predict needs the shape's microbatches settled (placement.resolved)")
    if gen_len < 2:
        raise ConfigError(f"--gen-len = {gen_len}: the model predicts decoding, needs >= 2")
    per_replica = batch // plan.data_parallel
    if per_replica % microbatches or per_replica < microbatches:
        raise ConfigError(
            f"--microbatches = {microbatches}: must divide the {per_replica} sequences of "
            f"each of {plan.data_parallel} replica(s)"
        )
    c = with_engine(c, engine)
    S = plan.n_stages
    if engine.schedule == "flushed":  # the engine chooses: S microbatches if they divide it
        microbatches = S if per_replica % S == 0 else 1
    rows, M = per_replica // microbatches, microbatches
    steps = gen_len - 1
    context = prompt_len + steps / 2  # the mean context a decode step attends over
    dec = tick(cfg, plan, c, rows, 1, context, prefill=False, engine=engine)
    if engine.schedule == "flushed":  # every decode step is a whole pass through the pipeline
        ticks = steps * (M + S - 1)
    else:  # steady state: a token a period, the pipe kept full between warm-up and drain
        ticks = (steps - 1) * max(M, S) + M + S - 1
    # per step, the engine's host work: fixed, and per sequence of a replica (they run apart)
    decode_s = ticks * dec.seconds(M) + steps * (c.step_s + c.seq_step_s * per_replica)
    ttft_s = prefill_s(
        cfg, plan, c, rows=rows, prompt_len=prompt_len, microbatches=M, engine=engine
    )
    tps = batch * steps / decode_s
    return Prediction(
        name=name,
        devices=plan.n_devices,
        ttft_ms=1e3 * ttft_s,
        tps=tps,
        tpot_ms=1e3 * decode_s / steps,
        ms_per_token_amortized=1e3 / tps,
        microbatches=M,
        e2e_ms=1e3 * (ttft_s + decode_s),
        decode_tick=TickTimes.of(dec, M),
    )


@dataclass(frozen=True)
class Floor:
    """The least time a decode step can take on a mesh (``floor``), and what it reads."""

    floor_tpot_ms: float
    max_tps: float
    floor_ms_per_token_amortized: float
    weight_bytes: int  # every layer's weights
    kv_bytes: float  # every layer's KV cache at the mean context
    context: float  # the mean context a decode step attends over

    def to_dict(self) -> dict:
        return asdict(self)


def floor(cfg: ModelConfig, c: Constants, n_devices: int, shape: RunShape) -> Floor:
    """The least time a decode step can take: every weight and the whole KV cache read once,
    spread perfectly over every device's HBM (or every FLOP at peak, if that is longer)."""
    mem = layer_memory(cfg, shape)
    batch = shape.batch
    context = shape.prompt_len + (shape.gen_len - 1) / 2
    weights = cfg.n_layers * mem.weight_bytes
    kv = cfg.n_layers * kv_bytes(cfg, batch, context)
    flops = 2 * batch * cfg.n_layers * mem.params
    step_s = max(
        (weights + kv) / (n_devices * c.hbm_bytes_per_s), flops / (n_devices * c.peak_flops)
    )
    return Floor(
        floor_tpot_ms=1e3 * step_s,
        max_tps=batch / step_s,
        floor_ms_per_token_amortized=1e3 * step_s / batch,
        weight_bytes=weights,
        kv_bytes=kv,
        context=context,
    )


@dataclass(frozen=True)
class SeedVerdict:
    """One of the seed's claimed rows held against the floor: is each figure possible?"""

    method: Method
    claimed_tps: float
    claimed_tpot_ms: float
    tps_possible: bool
    tpot_as_latency_possible: bool
    tpot_as_amortized_possible: bool

    def to_dict(self) -> dict:
        return asdict(self)


def verdicts(fl: Floor) -> tuple[SeedVerdict, ...]:
    """Is each of the seed's figures possible on this mesh? TPOT read both ways."""
    return tuple(
        SeedVerdict(
            method=method,
            claimed_tps=tps,
            claimed_tpot_ms=tpot,
            tps_possible=tps <= fl.max_tps,
            tpot_as_latency_possible=tpot >= fl.floor_tpot_ms,
            tpot_as_amortized_possible=tpot >= fl.floor_ms_per_token_amortized,
        )
        for method, tps, tpot in SEED_ROWS
    )


def why(layerwise: Prediction, baseline: Prediction) -> str:
    """The terms that decide, per decode tick: the slowest stage's kernels (and whether its
    weights are re-read from L2) against the baseline's kernels and all-reduces."""
    lw, base = layerwise.decode_tick, baseline.decode_tick
    return (
        f"a layer-wise tick runs {layerwise.microbatches} microbatches through "
        f"{lw.kernels_us:.0f} us of kernels (attention {lw.attention_us:.0f}, MLP "
        f"{lw.mlp_us:.0f}"
        + (f"; L2 saves {lw.l2_saving_us:.0f} us a re-read" if lw.resident_in_l2 else "")
        + f"); a baseline tick is {base.kernels_us:.0f} us of kernels and "
        f"{base.allreduce_us:.0f} us of all-reduces"
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
