"""Model and mesh configs: TOML files read into frozen, self-validating dataclasses.

A name such as ``dense16`` resolves to ``models/dense16.toml`` (or ``meshes/...``);
a path works too.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

# The project root holds models/ and meshes/; the working directory is searched first.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TIER_NAMES = ("smem", "l2", "hbm")  # smallest and fastest first
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}
RUN_DTYPES = ("float32", "bfloat16", "float16")  # what the executors compute in
MLP_KINDS = {"gelu": 2, "swiglu": 3}  # kind -> d_model x d_ff matrices


class ConfigError(ValueError):
    """Bad user input: a one-line message naming the field and the value."""


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


def _positive_int(source: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source}: field '{name}' = {value!r}: must be a positive integer")


def _positive_number(source: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{source}: field '{name}' = {value!r}: must be a positive number")


@dataclass(frozen=True)
class StatedFigures:
    """The seed's own per-layer figures, kept apart from the dims (they disagree with them)."""

    total_params: int
    weight_bytes: int
    activation_bytes: int
    buffer_bytes: int


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    dtype: str
    batch: int
    seq_len: int  # the context the KV cache holds (the seed's "Sequence Length")
    prompt_len: int
    gen_len: int
    buffer_bytes: int  # configured per-layer estimate of workspace buffers
    stated: StatedFigures | None = None
    source: str = "<memory>"
    n_kv_heads: int | None = None  # K/V heads (grouped-query attention); None: n_heads
    mlp: str = "gelu"  # "gelu": w2(gelu(x w1)); "swiglu": w2(silu(x w1) * (x w3))
    tie_embeddings: bool = False  # the LM head is the embedding, transposed
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    attention_bias: bool = False  # biases on the q, k and v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm of each query and key head before the rotation (Qwen3)
    weight_dtype: str | None = None  # how weights are stored; None: dtype
    kv_dtype: str | None = None  # how the KV cache is stored; None: dtype

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for name in (
            "n_layers",
            "d_model",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "d_ff",
            "vocab",
            "batch",
        ):
            _positive_int(self.source, name, getattr(self, name))
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"{self.source}: field 'n_kv_heads' = {self.n_kv_heads}: must divide "
                f"n_heads = {self.n_heads}"
            )
        if self.mlp not in MLP_KINDS:
            raise ConfigError(
                f"{self.source}: field 'mlp' = {self.mlp!r}: use one of {list(MLP_KINDS)}"
            )
        for name in ("tie_embeddings", "attention_bias", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{self.source}: field '{name}' = {getattr(self, name)!r}: use true or false"
                )
        for name in ("rope_theta", "norm_eps"):
            _positive_number(self.source, name, getattr(self, name))
        for name in ("seq_len", "prompt_len", "gen_len"):
            _positive_int(self.source, name, getattr(self, name))
        if self.buffer_bytes < 0:
            raise ConfigError(
                f"{self.source}: field 'buffer_bytes' = {self.buffer_bytes!r}: must be >= 0"
            )
        if self.dtype not in RUN_DTYPES:
            raise ConfigError(
                f"{self.source}: field 'dtype' = {self.dtype!r}: use one of {list(RUN_DTYPES)} "
                "(the activations' dtype; weight_dtype and kv_dtype may be float8_e4m3fn)"
            )
        for name in ("weight_dtype", "kv_dtype"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.dtype)
            if getattr(self, name) not in DTYPE_BYTES:
                raise ConfigError(
                    f"{self.source}: field '{name}' = {getattr(self, name)!r}: use one of "
                    f"{sorted(DTYPE_BYTES)}"
                )
        if self.prompt_len + self.gen_len > self.seq_len:
            raise ConfigError(
                f"{self.source}: field 'gen_len' = {self.gen_len}: prompt_len + gen_len "
                f"= {self.prompt_len + self.gen_len} exceeds seq_len = {self.seq_len}"
            )

    @property
    def dtype_bytes(self) -> int:
        """Bytes of an activation."""
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes_each(self) -> int:
        return DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes_each(self) -> int:
        return DTYPE_BYTES[self.kv_dtype]

    def with_dtype(self, dtype: str) -> ModelConfig:
        """The model computed, stored and cached in ``dtype``."""
        return self.replace(dtype=dtype, weight_dtype=dtype, kv_dtype=dtype)

    @property
    def hf_folder(self) -> Path | None:
        """The Hugging Face folder the model was read from (None: a TOML file)."""
        source = Path(self.source)
        return source.parent if source.name == "config.json" else None

    @property
    def q_width(self) -> int:
        """Width of the queries (and of the attention output): n_heads x head_dim."""
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of the keys (and of the values): n_kv_heads x head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """d_model x d_ff matrices in one MLP: 2 for GELU, 3 for SwiGLU (gate, up, down)."""
        return MLP_KINDS[self.mlp]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


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
    """What a device's kernels achieve, for the performance model (``jaxpart.perfmodel``); each
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

    def __post_init__(self) -> None:
        _positive_int(self.source, "hosts", self.hosts)
        _positive_int(self.source, "devices_per_host", self.devices_per_host)
        _positive_number(self.source, "peak_flops", self.peak_flops)
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
        )


def resolve(name_or_path: str, kind: str) -> Path:
    """`dense16` -> models/dense16.toml, looked up in the working directory, then the project."""
    flag = {"models": "--model", "meshes": "--mesh"}[kind]
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if candidate.is_file():
            return candidate
        raise ConfigError(f"{flag} = {name_or_path!r}: no such file")
    for root in (Path.cwd(), PROJECT_ROOT):
        path = root / kind / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = sorted(p.stem for p in (PROJECT_ROOT / kind).glob("*.toml"))
    raise ConfigError(f"{flag} = {name_or_path!r}: not found in {kind}/ (known: {known})")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


class _Fields:
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
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(
                f"{self.source}: field '{self.prefix}{name}' = {value!r}: must be a number >= 0"
            )
        return float(value)

    def done(self) -> None:
        if self.table:
            unknown = sorted(self.table)[0]
            raise ConfigError(f"{self.source}: unknown field '{self.prefix}{unknown}'")


def load_model(name_or_path: str) -> ModelConfig:
    """A shipped model's name, a TOML file, or a Hugging Face folder (with a config.json)."""
    if Path(name_or_path).is_dir():
        return load_hf_model(Path(name_or_path))
    path = resolve(name_or_path, "models")
    data = _read_toml(path)
    src = str(path.name if path.parent.name == "models" else path)
    top = _Fields(src, data, "")
    m = _Fields(src, top.take("model"), "model.")
    stated_table = top.take("stated", None)
    top.done()
    stated = None
    if stated_table is not None:
        s = _Fields(src, stated_table, "stated.")
        total = s.take("total_params")
        _positive_number(src, "stated.total_params", total)
        stated = StatedFigures(
            total_params=int(total),
            weight_bytes=s.size("weight_bytes"),
            activation_bytes=s.size("activation_bytes"),
            buffer_bytes=s.size("buffer_bytes"),
        )
        s.done()
    model = ModelConfig(
        name=m.take("name", path.stem),
        n_layers=m.take("n_layers"),
        d_model=m.take("d_model"),
        n_heads=m.take("n_heads"),
        head_dim=m.take("head_dim"),
        d_ff=m.take("d_ff"),
        vocab=m.take("vocab"),
        dtype=m.take("dtype"),
        batch=m.take("batch"),
        seq_len=m.take("seq_len"),
        prompt_len=m.take("prompt_len"),
        gen_len=m.take("gen_len"),
        buffer_bytes=m.size("buffer_bytes", 0),
        stated=stated,
        source=src,
        n_kv_heads=m.take("n_kv_heads", None),
        mlp=m.take("mlp", "gelu"),
        tie_embeddings=m.take("tie_embeddings", False),
        rope_theta=m.take("rope_theta", 10_000.0),
        norm_eps=m.take("norm_eps", 1e-6),
        attention_bias=m.take("attention_bias", False),
        qk_norm=m.take("qk_norm", False),
        weight_dtype=m.take("weight_dtype", None),
        kv_dtype=m.take("kv_dtype", None),
    )
    m.done()
    return model


HF_ARCHITECTURES = {
    "llama": {},
    "mistral": {},
    "qwen2": {"attention_bias": True},
    "qwen3": {"qk_norm": True},
}


def load_hf_model(folder: Path) -> ModelConfig:
    """A Hugging Face folder's config.json (Llama, Mistral, Qwen2, Qwen3; dense) as a model.

    What jaxpart does not implement (rope scaling, a sliding window, MLP biases, experts,
    partial rotary, another activation) is a one-line error naming the field and its value.
    The run shape is a serving default: batch 16, the context up to 4096 positions, half of it
    prompt, up to 128 new tokens.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model = '{folder}': a folder, but without config.json")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    src = str(path)

    def unsupported(field: str, why: str):
        raise ConfigError(f"{src}: field '{field}' = {hf.get(field)!r}: {why}")

    kind = hf.get("model_type")
    if kind not in HF_ARCHITECTURES:
        unsupported("model_type", f"jaxpart runs {sorted(HF_ARCHITECTURES)} (dense decoders)")
    for field in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(field):
            unsupported(field, "mixture-of-experts models are not supported")
    if hf.get("quantization_config") is not None:
        method = hf["quantization_config"].get("quant_method", "?")
        raise ConfigError(
            f"{src}: field 'quantization_config' = {method!r}: quantized checkpoints are not "
            "supported (a model file's weight_dtype = 'float8_e4m3fn' plans and simulates FP8)"
        )
    if hf.get("rope_scaling") is not None:
        unsupported("rope_scaling", "rope scaling is not implemented")
    if hf.get("hidden_act", "silu") != "silu":
        unsupported("hidden_act", "only SwiGLU (silu) MLPs are implemented for these models")
    if hf.get("mlp_bias"):
        unsupported("mlp_bias", "MLP biases are not implemented")
    if kind != "qwen2" and hf.get("attention_bias"):
        unsupported("attention_bias", f"attention biases are implemented for qwen2, not {kind}")
    if hf.get("use_sliding_window") or (kind == "mistral" and hf.get("sliding_window")):
        field = "use_sliding_window" if hf.get("use_sliding_window") else "sliding_window"
        unsupported(field, "sliding-window attention is not implemented")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        unsupported("partial_rotary_factor", "only full rotary embeddings are implemented")
    if hf.get("torch_dtype", "bfloat16") not in RUN_DTYPES:
        unsupported("torch_dtype", f"use one of {list(RUN_DTYPES)}")
    try:
        heads, d_model = int(hf["num_attention_heads"]), int(hf["hidden_size"])
        context = min(int(hf.get("max_position_embeddings", 4096)), 4096)
        prompt = max(1, context // 2)
        return ModelConfig(
            name=folder.name,
            n_layers=int(hf["num_hidden_layers"]),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or d_model // heads),
            d_ff=int(hf["intermediate_size"]),
            vocab=int(hf["vocab_size"]),
            dtype=hf.get("torch_dtype", "bfloat16"),
            batch=16,
            seq_len=context,
            prompt_len=prompt,
            gen_len=min(128, context - prompt),
            buffer_bytes=0,
            source=src,
            mlp="swiglu",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            rope_theta=float(hf.get("rope_theta", 10_000.0)),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            **HF_ARCHITECTURES[kind],
        )
    except ConfigError:
        raise
    except KeyError as e:
        raise ConfigError(f"{src}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{src}: {e}") from None


def _load_link(src: str, table: dict[str, Any], name: str) -> Link:
    f = _Fields(src, table, f"links.{name}.")
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
    data = _read_toml(path)
    src = str(path.name if path.parent.name == "meshes" else path)
    top = _Fields(src, data, "")
    m = _Fields(src, top.take("mesh"), "mesh.")
    tiers_table = top.take("tiers")
    links = _Fields(src, top.take("links"), "links.")
    timing = _load_timing(src, top.take("timing", None))
    top.done()
    tiers = {}
    for tier_name, table in _Fields(src, tiers_table, "tiers.").table.items():
        if tier_name not in TIER_NAMES:
            raise ConfigError(f"{src}: unknown field 'tiers.{tier_name}' (use {list(TIER_NAMES)})")
        t = _Fields(src, table, f"tiers.{tier_name}.")
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
        name=m.take("name", path.stem),
        platform=m.take("platform"),
        device_kind=m.take("device_kind"),
        hosts=m.take("hosts"),
        devices_per_host=m.take("devices_per_host"),
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
    f = _Fields(src, table, "timing.")
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


def shipped(kind: str) -> list[Path]:
    """Every config file the project ships, for the test that loads them all."""
    return sorted((PROJECT_ROOT / kind).glob("*.toml"))
