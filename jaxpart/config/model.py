"""The model: its architecture and maximum context, from a TOML file or a Hugging Face folder.
A model file may keep a [run] table, the run shape it suggests (``default_run``); the shape
itself is a ``RunShape``, never part of the model. No jax."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxpart.config.errors import ConfigError
from jaxpart.config.fields import Fields, positive_int, positive_number, read_toml
from jaxpart.config.files import is_shipped, resolve
from jaxpart.config.kinds import DTYPE_BYTES, RUN_DTYPES
from jaxpart.config.quant import DEFAULT_FP8, FP8, Fp8Scheme, parse_quantization
from jaxpart.config.rope import RopeScaling, context_cap, parse_scaling
from jaxpart.config.shape import RunShape, serving_default

MLP_KINDS = {"gelu": 2, "swiglu": 3, "geglu": 3}  # kind -> d_model x d_ff matrices


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
    seq_len: int  # the maximum context: what the KV cache holds (the seed's "Sequence Length")
    buffer_bytes: int  # configured per-layer estimate of workspace buffers
    stated: StatedFigures | None = None
    source: str = "<memory>"
    n_kv_heads: int | None = None  # K/V heads (grouped-query attention); None: n_heads
    mlp: str = "gelu"  # "gelu": w2(gelu(x w1)); "swiglu": w2(silu(x w1) * (x w3)); "geglu":
    # w2(gelu_tanh(x w1) * (x w3)) (Gemma)
    tie_embeddings: bool = False  # the LM head is the embedding, transposed
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling | None = None  # None: plain RoPE (config/rope.py)
    norm_eps: float = 1e-6
    attention_bias: bool = False  # biases on the q, k and v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm of each query and key head before the rotation (Qwen3)
    weight_dtype: str | None = None  # how weights are stored; None: dtype
    kv_dtype: str | None = None  # how the KV cache is stored; None: dtype
    sliding_window: int = 0  # every layer attends to its last W keys (its own included); 0: all
    # Gemma 2: RMSNorm scaled by (1 + w); norms after attention and before and after the MLP;
    # embeddings times sqrt(d_model); scores scaled by query_pre_attn_scalar ** -0.5 (0: by
    # head_dim ** -0.5); attention scores and final logits soft-capped (cap * tanh(x / cap); 0:
    # none)
    # per layer: its sliding window (0: full attention), where layers differ (Qwen2's upper
    # layers, Gemma's local ones); empty: sliding_window for every layer
    layer_windows: tuple[int, ...] = ()
    local_rope_theta: float = 0.0  # Gemma 3: windowed layers' own plain RoPE base; 0: the same
    norm_plus_one: bool = False
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float = 0.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    # FP8 weights (weight_dtype = float8_e4m3fn): their scales and the activations' quantisation
    # (config/quant.py); None where the weights are not FP8
    quant: Fp8Scheme | None = None

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
        ):
            positive_int(self.source, name, getattr(self, name))
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"{self.source}: field 'n_kv_heads' = {self.n_kv_heads}: must divide "
                f"n_heads = {self.n_heads}"
            )
        if self.mlp not in MLP_KINDS:
            raise ConfigError(
                f"{self.source}: field 'mlp' = {self.mlp!r}: use one of {list(MLP_KINDS)}"
            )
        for name in (
            "tie_embeddings",
            "attention_bias",
            "qk_norm",
            "norm_plus_one",
            "sandwich_norms",
            "scale_embeddings",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{self.source}: field '{name}' = {getattr(self, name)!r}: use true or false"
                )
        for name in ("rope_theta", "norm_eps"):
            positive_number(self.source, name, getattr(self, name))
        for name in ("query_pre_attn_scalar", "attn_softcap", "final_softcap", "local_rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"{self.source}: field '{name}' = {value!r}: must be >= 0")
        if (
            isinstance(self.sliding_window, bool)
            or not isinstance(self.sliding_window, int)
            or (self.sliding_window < 0)
        ):
            raise ConfigError(
                f"{self.source}: field 'sliding_window' = {self.sliding_window!r}: a whole "
                "number of positions >= 0 (0: no window)"
            )
        if self.layer_windows and len(self.layer_windows) != self.n_layers:
            raise ConfigError(
                f"{self.source}: field 'layer_windows': {len(self.layer_windows)} layer windows "
                f"for {self.n_layers} layers"
            )
        positive_int(self.source, "seq_len", self.seq_len)
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
        if self.weight_dtype == FP8 and self.quant is None:
            object.__setattr__(self, "quant", DEFAULT_FP8)
        if self.weight_dtype != FP8 and self.quant is not None:
            object.__setattr__(self, "quant", None)

    @property
    def dtype_bytes(self) -> int:
        """Bytes of an activation."""
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes_each(self) -> int:
        return DTYPE_BYTES[self.weight_dtype]

    @property
    def embed_bytes_each(self) -> int:
        """Bytes of an embedding or LM-head element: FP8 models keep both in the activations'
        dtype, as FP8 checkpoints do (their ``ignore`` lists the head)."""
        return DTYPE_BYTES[self.dtype] if self.fp8 else self.weight_bytes_each

    @property
    def kv_bytes_each(self) -> int:
        return DTYPE_BYTES[self.kv_dtype]

    @property
    def fp8(self) -> bool:
        """Whether the layers' matrices are stored in FP8 (with ``quant``'s scales)."""
        return self.weight_dtype == FP8

    @property
    def precision(self) -> str:
        """What bounds the placements' agreement: FP8 where the weights or the KV cache are,
        else the dtype."""
        return FP8 if self.fp8 or self.kv_dtype == FP8 else self.dtype

    def with_dtype(self, dtype: str) -> ModelConfig:
        """The model computed in ``dtype``: stored and cached in it too, but for FP8 weights and
        an FP8 KV cache, which stay FP8 (``dequantized`` gives the 16-bit model)."""
        weights = FP8 if self.fp8 else dtype
        cache = FP8 if self.kv_dtype == FP8 else dtype
        return self.replace(dtype=dtype, weight_dtype=weights, kv_dtype=cache)

    def quantized(self, scheme: Fp8Scheme = DEFAULT_FP8) -> ModelConfig:
        """The model with FP8 weights in ``scheme`` (``--quantize fp8``)."""
        return self.replace(weight_dtype=FP8, quant=scheme)

    def dequantized(self) -> ModelConfig:
        """The same model with its weights and KV cache in the activations' dtype."""
        return self.replace(weight_dtype=self.dtype, kv_dtype=self.dtype, quant=None)

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


def load_model(name_or_path: str) -> ModelConfig:
    """A shipped model's name, a TOML file, or a Hugging Face folder (with a config.json)."""
    return load_model_file(name_or_path)[0]


def default_run(name_or_path: str) -> RunShape:
    """The run shape a model file suggests: its [run] table, else ``serving_default``."""
    return load_model_file(name_or_path)[1]


def load_model_file(name_or_path: str) -> tuple[ModelConfig, RunShape]:
    """The model (architecture and maximum context) and its file's default run shape. A bare
    name that is both a shipped model and a folder here is the shipped model, and a warning
    says so (``./NAME`` names the folder)."""
    if Path(name_or_path).is_dir() and not _also_shipped(name_or_path):
        model = load_hf_model(Path(name_or_path))
        return model, serving_default(model.seq_len)
    path = resolve(name_or_path, "models")
    data = read_toml(path)
    src = str(path.name if is_shipped(path) else path)
    top = Fields(src, data, "")
    m = Fields(src, top.take("model"), "model.")
    stated_table = top.take("stated", None)
    run_table = top.take("run", None)
    top.done()
    for moved in ("batch", "prompt_len", "gen_len"):
        if moved in m.table:
            raise ConfigError(
                f"{src}: field 'model.{moved}' = {m.table[moved]!r}: the run shape lives in a "
                f"[run] table (run.{moved}), not in [model]"
            )
    stated = None
    if stated_table is not None:
        s = Fields(src, stated_table, "stated.")
        total = s.take("total_params")
        positive_number(src, "stated.total_params", total)
        stated = StatedFigures(
            total_params=int(total),
            weight_bytes=s.size("weight_bytes"),
            activation_bytes=s.size("activation_bytes"),
            buffer_bytes=s.size("buffer_bytes"),
        )
        s.done()
    scaling = _toml_scaling(m.take("rope_scaling", None), src, m)
    model = ModelConfig(
        name=m.take("name", path.name.removesuffix(".toml")),
        n_layers=m.take("n_layers"),
        d_model=m.take("d_model"),
        n_heads=m.take("n_heads"),
        head_dim=m.take("head_dim"),
        d_ff=m.take("d_ff"),
        vocab=m.take("vocab"),
        dtype=m.take("dtype"),
        seq_len=m.take("seq_len"),
        buffer_bytes=m.size("buffer_bytes", 0),
        stated=stated,
        source=src,
        n_kv_heads=m.take("n_kv_heads", None),
        mlp=m.take("mlp", "gelu"),
        tie_embeddings=m.take("tie_embeddings", False),
        rope_theta=m.take("rope_theta", 10_000.0),
        rope_scaling=scaling,
        norm_eps=m.take("norm_eps", 1e-6),
        attention_bias=m.take("attention_bias", False),
        qk_norm=m.take("qk_norm", False),
        sliding_window=m.take("sliding_window", 0),
        layer_windows=_windows(m.take("layer_windows", []), src),
        local_rope_theta=m.take("local_rope_theta", 0.0),
        norm_plus_one=m.take("norm_plus_one", False),
        sandwich_norms=m.take("sandwich_norms", False),
        scale_embeddings=m.take("scale_embeddings", False),
        query_pre_attn_scalar=m.take("query_pre_attn_scalar", 0.0),
        attn_softcap=m.take("attn_softcap", 0.0),
        final_softcap=m.take("final_softcap", 0.0),
        weight_dtype=m.take("weight_dtype", None),
        kv_dtype=m.take("kv_dtype", None),
    )
    m.done()
    if run_table is None:
        return model, serving_default(model.seq_len)
    r = Fields(src, run_table, "run.")
    values = {name: r.take(name) for name in ("batch", "prompt_len", "gen_len")}
    values["microbatches"] = r.take("microbatches", None)
    r.done()
    for name, value in values.items():
        if value is not None:
            positive_int(src, f"run.{name}", value)
    shape = RunShape(**values)
    if shape.context > model.seq_len:
        raise ConfigError(
            f"{src}: field 'run.gen_len' = {shape.gen_len}: run.prompt_len + run.gen_len = "
            f"{shape.context} exceeds model.seq_len = {model.seq_len}"
        )
    return model, shape


def _also_shipped(name: str) -> bool:
    """Whether ``name`` (a folder here) is also a shipped model's bare name: then the shipped
    model is meant, and one warning line says so."""
    if "/" in name or name.endswith(".toml"):
        return False
    try:
        resolve(name, "models")
    except ConfigError:
        return False
    import warnings

    warnings.warn(
        f"--model = {name!r} is a shipped model and a folder here: using the shipped model "
        f"(./{name} names the folder)",
        stacklevel=3,
    )
    return True


def _windows(values, src: str) -> tuple[int, ...]:
    """A model file's ``layer_windows``: a window a layer (0: full attention)."""
    if not isinstance(values, list) or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values
    ):
        raise ConfigError(
            f"{src}: field 'layer_windows' = {values!r}: a list of whole numbers >= 0, one a "
            "layer (0: full attention)"
        )
    return tuple(values)


def _toml_scaling(table, src: str, m: Fields) -> RopeScaling | None:
    """A model file's [model.rope_scaling] table (Hugging Face's keys)."""
    if table is None:
        return None
    scaling, theta = parse_scaling(
        table,
        f"{src}: model.rope_scaling",
        max_positions=int(table.get("original_max_position_embeddings", 0))
        or m.table.get("seq_len", 1),
        head_dim=m.table.get("head_dim", 2),
    )
    if theta is not None:
        raise ConfigError(
            f"{src}: field 'model.rope_scaling.rope_theta': give it as model.rope_theta"
        )
    return scaling


HF_ARCHITECTURES = {
    "llama": {},
    "mistral": {},
    "qwen2": {"attention_bias": True},
    "qwen3": {"qk_norm": True},
    "phi3": {},  # fused qkv_proj and gate_up_proj, split as the weights are read (io/weights.py)
    # Gemma 2 (transformers' modeling_gemma2.py): tanh-GeGLU, (1 + w) norms around both blocks,
    # embeddings times sqrt(d_model), its own score scale and soft-caps (read from config.json)
    "gemma2": {
        "mlp": "geglu",
        "norm_plus_one": True,
        "sandwich_norms": True,
        "scale_embeddings": True,
        "tie_embeddings": True,
    },
    # Gemma 3 text (modeling_gemma3.py): Gemma 2's layer, per-head q/k norms, no soft-caps, and
    # its local (windowed) layers on their own plain RoPE base
    "gemma3_text": {
        "mlp": "geglu",
        "norm_plus_one": True,
        "sandwich_norms": True,
        "scale_embeddings": True,
        "tie_embeddings": True,
        "qk_norm": True,
    },
}


def _gemma3_rope(hf: dict, key: str, table, src: str) -> tuple[float, dict | None]:
    """(the local layers' RoPE base, the global layers' rope table) of a Gemma 3 config: 5.x
    nests them under sliding_attention and full_attention; earlier ones give the local base as
    rope_local_base_freq (10000 by default) beside a global rope_scaling."""
    if isinstance(table, dict) and ("full_attention" in table or "sliding_attention" in table):
        local = table.get("sliding_attention") or {}
        kind = local.get("rope_type", local.get("type", "default"))
        if kind != "default" or set(local) - {"rope_type", "type", "rope_theta"}:
            raise ConfigError(
                f"{src}: field '{key}.sliding_attention' = {local!r}: the local layers' RoPE "
                "must be plain (a rope_theta only)"
            )
        return float(local.get("rope_theta", 10_000.0)), table.get("full_attention")
    return float(hf.get("rope_local_base_freq") or 10_000.0), table


def layer_windows(hf: dict, kind: str, src: str = "config.json") -> tuple[int, ...]:
    """Each layer's sliding attention window (0: full attention), as each family's transformers
    code sets it: Mistral and Phi-3 window every layer by ``sliding_window``; Qwen2 and Qwen3
    the layers from ``max_window_layers`` up where ``use_sliding_window`` is set; Gemma the
    layers its ``layer_types`` call ``sliding_attention`` (by default every other one for
    Gemma 2, five in six for Gemma 3). A window admits W keys, the query's own included."""
    window = hf.get("sliding_window")
    n = hf.get("num_hidden_layers")
    if window is None or not isinstance(n, int) or n < 1:
        return ()
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"{src}: field 'sliding_window' = {window!r}: must be a whole number")
    if kind in ("mistral", "phi3"):
        return (window,) * n
    if kind in ("qwen2", "qwen3"):
        if not hf.get("use_sliding_window"):
            return ()
        first = hf.get("max_window_layers", n)
        return tuple(window if i >= first else 0 for i in range(n))
    if kind in ("gemma2", "gemma3_text"):
        types = hf.get("layer_types")
        if types is None:
            pattern = 2 if kind == "gemma2" else hf.get("sliding_window_pattern", 6)
            types = [
                "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)
            ]
        if not isinstance(types, list) or len(types) != n:
            raise ConfigError(f"{src}: field 'layer_types': expected one entry a layer ({n})")
        return tuple(window if t == "sliding_attention" else 0 for t in types)
    return ()


INTEGER_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)


def load_hf_model(folder: Path) -> ModelConfig:
    """A Hugging Face folder's config.json (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2, Gemma 3
    text; dense) as a model. Sliding attention windows, on every layer (Mistral, Phi-3) or on
    some (Qwen2's upper layers, Gemma's local ones), run in the attention kernels.

    RoPE scaling of every type transformers ships (config/rope.py) is read from ``rope_scaling``
    or 5.x's ``rope_parameters``, the dtype from ``torch_dtype`` or 5.x's ``dtype``. What jaxpart
    does not implement (MLP biases, experts, partial rotary, another activation, bidirectional
    attention) is a one-line error naming the field and its value. The context is capped at
    4096 positions (dynamic NTK: max_position_embeddings x factor, which it scales into); the
    default run shape is ``serving_default``.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model = '{folder}': a folder, but without config.json")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{path}: a {type(hf).__name__}, where config.json is a table of fields")
    src = str(path)
    for key in INTEGER_FIELDS:  # whole numbers > 0, as transformers' configs hold them
        value = hf.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ConfigError(f"{src}: field '{key}' = {value!r}: must be a whole number > 0")

    def unsupported(field: str, why: str):
        raise ConfigError(f"{src}: field '{field}' = {hf.get(field)!r}: {why}")

    kind = hf.get("model_type")
    if kind not in HF_ARCHITECTURES:
        unsupported("model_type", f"jaxpart runs {sorted(HF_ARCHITECTURES)} (dense decoders)")
    for field in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(field):
            unsupported(field, "mixture-of-experts models are not supported")
    quant, kv_fp8 = None, False
    if hf.get("quantization_config") is not None:
        quant, kv_fp8 = parse_quantization(hf["quantization_config"], src)
    if hf.get("use_bidirectional_attention"):
        unsupported("use_bidirectional_attention", "jaxpart runs causal decoders only")
    if kind in ("gemma2", "gemma3_text"):
        if hf.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            unsupported("hidden_activation", "Gemma's MLP is implemented with tanh GELU only")
    elif hf.get("hidden_act", "silu") != "silu":
        unsupported("hidden_act", "only SwiGLU (silu) MLPs are implemented for these models")
    if hf.get("mlp_bias"):
        unsupported("mlp_bias", "MLP biases are not implemented")
    if kind != "qwen2" and hf.get("attention_bias"):
        unsupported("attention_bias", f"attention biases are implemented for qwen2, not {kind}")
    windows = layer_windows(hf, kind, src)
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        unsupported("partial_rotary_factor", "only full rotary embeddings are implemented")
    dtype_key = "dtype" if hf.get("dtype") is not None else "torch_dtype"  # 5.x, pre-5.0
    dtype = hf.get(dtype_key) or "bfloat16"
    if dtype not in RUN_DTYPES:
        unsupported(dtype_key, f"use one of {list(RUN_DTYPES)}")
    try:
        heads, d_model = int(hf["num_attention_heads"]), int(hf["hidden_size"])
        head_dim = int(hf.get("head_dim") or d_model // heads)
        max_positions = int(hf.get("max_position_embeddings", 4096))
        # transformers 5 writes rope_parameters (rope_theta inside); earlier ones rope_scaling
        key = "rope_parameters" if hf.get("rope_parameters") is not None else "rope_scaling"
        top_original = hf.get("original_max_position_embeddings")
        table = hf.get(key)
        local_theta = 0.0
        if kind == "gemma3_text":  # global layers: full_attention; local: plain RoPE
            local_theta, table = _gemma3_rope(hf, key, table, src)
        if kind == "phi3":  # Phi3Config: its own default, and "su" / "yarn" mean longrope
            top_original = top_original or 4096
            if isinstance(table, dict) and table.get("rope_type", table.get("type")) in (
                "su",
                "yarn",
            ):
                table = {k: v for k, v in table.items() if k != "type"} | {"rope_type": "longrope"}
        scaling, table_theta = parse_scaling(
            table,
            f"{src}: field '{key}'",
            max_positions=max_positions,
            head_dim=head_dim,
            top_original_max=int(top_original) if top_original else None,
        )
        default_theta = 1_000_000.0 if kind == "gemma3_text" else 10_000.0
        theta = table_theta or float(hf.get("rope_theta") or default_theta)
        family = {k: v for k, v in HF_ARCHITECTURES[kind].items() if k != "tie_embeddings"}
        tied_default = HF_ARCHITECTURES[kind].get("tie_embeddings", False)
        gemma = {}
        if kind in ("gemma2", "gemma3_text"):
            gemma = {
                "query_pre_attn_scalar": float(hf.get("query_pre_attn_scalar") or head_dim),
                "attn_softcap": float(hf.get("attn_logit_softcapping") or 0.0),
                "final_softcap": float(hf.get("final_logit_softcapping") or 0.0),
            }
        context = context_cap(max_positions, scaling)
        uniform = windows[0] if windows and len(set(windows)) == 1 else 0
        return ModelConfig(
            name=folder.name,
            n_layers=int(hf["num_hidden_layers"]),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            d_ff=int(hf["intermediate_size"]),
            vocab=int(hf["vocab_size"]),
            dtype=dtype,
            seq_len=context,
            buffer_bytes=0,
            source=src,
            **({"mlp": "swiglu"} | family),
            tie_embeddings=bool(hf.get("tie_word_embeddings", tied_default)),
            rope_theta=theta,
            rope_scaling=scaling,
            sliding_window=uniform,
            layer_windows=() if uniform or not any(windows) else windows,
            local_rope_theta=local_theta,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            weight_dtype=FP8 if quant else None,
            kv_dtype=FP8 if kv_fp8 else None,
            quant=quant,
            **gemma,
        )
    except ConfigError:
        raise
    except KeyError as e:
        raise ConfigError(f"{src}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{src}: {e}") from None
