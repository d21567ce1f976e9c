"""FP8 schemes: how a model's FP8 weights are scaled and how its activations are quantised
before each FP8 GEMM, from a Hugging Face ``quantization_config`` or jaxpart's own default.
No jax.

Three formats are read, each as its own code defines it:

- **compressed-tensors** (``quant_method = "compressed-tensors"``, RedHat / Neural Magic's FP8
  models): one config group targeting ``Linear``, its ``weights`` a float of 8 bits with
  strategy ``tensor``, ``channel`` or ``block``; its ``input_activations`` dynamic per
  ``token`` (or per ``group`` with blocks), static per ``tensor`` (a stored ``input_scale``), or
  absent (weight-only FP8); ``ignore`` names the modules kept in 16 bits.
- **fbgemm_fp8** (Meta's Llama 3.1 405B FP8): per-row weight scales, activations quantised
  per token with their scale capped at ``activation_scale_ub``.
- **fine-grained FP8** (``quant_method = "fp8"``, Qwen3 and DeepSeek FP8): ``weight_block_size``
  blocks ``[rows, columns]`` with a ``weight_scale_inv`` each, activations quantised per token
  and per group of ``columns`` inputs.

Every scale multiplies: a stored e4m3 value times its scale is the 16-bit value. ``--quantize
fp8`` and a model file's ``weight_dtype = "float8_e4m3fn"`` use ``DEFAULT_FP8``: per-channel
weights and dynamic per-token activations, compressed-tensors' FP8-dynamic scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jaxpart.config.errors import ConfigError

FP8 = "float8_e4m3fn"
FP8_MAX = 448.0  # the largest finite e4m3fn value
WEIGHTS = ("channel", "tensor", "block")
ACTIVATIONS = ("token", "group", "tensor", "none")
# What each run of activations keeps, for the one-line descriptions.
ACTIVATION_WORDS = {
    "token": "activations quantised per token, dynamically",
    "group": "activations quantised per token and group, dynamically",
    "tensor": "activations quantised with stored per-tensor scales",
    "none": "activations in 16 bits (weight-only FP8)",
}


@dataclass(frozen=True)
class Fp8Scheme:
    """How FP8 weights are scaled and activations quantised (hashable: jit takes it static).

    ``weights``: "channel" (a scale per output row; "tensor" checkpoints are read as channel
    scales, the one value repeated) or "block" (``block = (rows, columns)``). ``activations``:
    "token" (dynamic, a scale per row), "group" (dynamic, per row and group of ``block[1]``
    inputs), "tensor" (the checkpoint's static ``input_scale``) or "none" (weight-only).
    ``scale_ub``: an upper bound on a dynamic activation scale's amax (fbgemm; 0: none)."""

    format: str = "jaxpart"
    weights: str = "channel"
    activations: str = "token"
    block: tuple[int, int] = ()
    scale_ub: float = 0.0
    ignore: tuple[str, ...] = ()
    # a dynamic activation scale's floor, as each format's kernel sets it (compressed-tensors:
    # float32's eps; fbgemm: 1 / (448 x 512); fine-grained, vLLM's: amax >= 1e-10)
    scale_floor: float = 1.1920929e-07

    @property
    def group(self) -> int:
        """Inputs a weight scale covers along the contraction (0: all of them)."""
        return self.block[1] if self.weights == "block" else 0

    def describe(self) -> str:
        weights = (
            f"{self.block[0]}x{self.block[1]} block scales"
            if self.weights == "block"
            else f"per-{self.weights} weight scales"
        )
        ub = f", activation scales capped at {self.scale_ub:g}" if self.scale_ub else ""
        return f"FP8 e4m3 ({self.format}): {weights}, {ACTIVATION_WORDS[self.activations]}{ub}"

    def ignores(self, module: str) -> bool:
        """Whether ``module`` (a Hugging Face name without ``.weight``) stays in 16 bits."""
        for pattern in self.ignore:
            if pattern.startswith("re:"):
                if re.match(pattern[3:], module):
                    return True
            elif module == pattern or module.endswith("." + pattern):
                return True
        return False


DEFAULT_FP8 = Fp8Scheme()


def parse_quantization(qc, src: str) -> tuple[Fp8Scheme, bool]:
    """A config.json's ``quantization_config`` -> (the scheme, whether the KV cache is FP8
    too); any other method, or an FP8 variant jaxpart does not run, is a one-line error naming
    the field and its value."""
    where = f"{src}: field 'quantization_config"
    if not isinstance(qc, dict):
        raise ConfigError(f"{where}' = {qc!r}: expected a table")
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, where)
    if method == "fbgemm_fp8":
        ub = _number(qc.get("activation_scale_ub", 0.0), f"{where}.activation_scale_ub'")
        ignore = _names(qc.get("modules_to_not_convert"), f"{where}.modules_to_not_convert'")
        floor = 1.0 / (FP8_MAX * 512)
        return Fp8Scheme("fbgemm_fp8", "channel", "token", (), ub, ignore, floor), False
    if method == "fp8":
        if qc.get("fmt", "e4m3") != "e4m3":
            raise ConfigError(f"{where}.fmt' = {qc.get('fmt')!r}: only e4m3 FP8 runs")
        if qc.get("activation_scheme", "dynamic") != "dynamic":
            raise ConfigError(
                f"{where}.activation_scheme' = {qc.get('activation_scheme')!r}: fine-grained "
                "FP8 runs dynamic activation scales only"
            )
        block = qc.get("weight_block_size")
        ignore = _names(qc.get("modules_to_not_convert"), f"{where}.modules_to_not_convert'")
        if block is None:  # per-tensor weights, dynamic per-tensor activations; read per token
            return Fp8Scheme("fp8", "tensor", "token", (), 0.0, ignore, 1e-10 / FP8_MAX), False
        block = _block(block, f"{where}.weight_block_size'")
        return Fp8Scheme("fp8", "block", "group", block, 0.0, ignore, 1e-10 / FP8_MAX), False
    raise ConfigError(
        f"{where}.quant_method' = {method!r}: jaxpart runs FP8 checkpoints "
        "(compressed-tensors, fbgemm_fp8, fp8); other quantisation methods are not supported"
    )


def _compressed_tensors(qc: dict, where: str) -> tuple[Fp8Scheme, bool]:
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise ConfigError(
            f"{where}.config_groups' = {groups!r}: exactly one quantisation group is supported"
        )
    ((name, group),) = groups.items()
    at = f"{where}.config_groups.{name}"
    if not isinstance(group, dict):
        raise ConfigError(f"{at}' = {group!r}: expected a table")
    w = group.get("weights")
    if not isinstance(w, dict) or w.get("type") != "float" or w.get("num_bits") != 8:
        raise ConfigError(
            f"{at}.weights' = {w!r}: jaxpart runs 8-bit float (FP8) weights only "
            "(integer and 4-bit schemes are not supported)"
        )
    strategy = w.get("strategy")
    if strategy not in WEIGHTS:
        raise ConfigError(f"{at}.weights.strategy' = {strategy!r}: use one of {list(WEIGHTS)}")
    if w.get("symmetric") is False or w.get("dynamic"):
        raise ConfigError(f"{at}.weights': asymmetric or dynamic weights are not supported")
    block = ()
    if strategy == "block":
        block = _block(w.get("block_structure"), f"{at}.weights.block_structure'")
    a = group.get("input_activations")
    if a is None:
        activations = "none"
    else:
        if not isinstance(a, dict) or a.get("type") != "float" or a.get("num_bits") != 8:
            raise ConfigError(f"{at}.input_activations' = {a!r}: only 8-bit float activations")
        kind = (a.get("strategy"), bool(a.get("dynamic")))
        activations = {
            ("token", True): "token",
            ("tensor", False): "tensor",
            ("group", True): "group",
            ("tensor", True): "token",  # dynamic per tensor: read per token, finer
        }.get(kind)
        if activations is None or (activations == "group" and strategy != "block"):
            raise ConfigError(
                f"{at}.input_activations.strategy' = {a.get('strategy')!r} (dynamic = "
                f"{a.get('dynamic')!r}): jaxpart runs dynamic per-token or per-group, or static "
                "per-tensor activation scales"
            )
        if activations == "group" and a.get("group_size", block[1]) != block[1]:
            raise ConfigError(
                f"{at}.input_activations.group_size' = {a.get('group_size')!r}: must equal the "
                f"weight block's columns, {block[1]}"
            )
    ignore = _names(qc.get("ignore"), f"{where}.ignore'")
    kv = qc.get("kv_cache_scheme")
    if kv is not None and (
        not isinstance(kv, dict) or kv.get("type") != "float" or kv.get("num_bits") != 8
    ):
        raise ConfigError(f"{where}.kv_cache_scheme' = {kv!r}: only an 8-bit float KV cache")
    return Fp8Scheme(
        "compressed-tensors", strategy, activations, block, 0.0, ignore
    ), kv is not None


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{where} = {value!r}: must be a number >= 0")
    return float(value)


def _names(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} = {value!r}: expected a list of module names")
    return tuple(value)


def _block(value, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{where} = {value!r}: expected [rows, columns], two whole numbers > 0")
    return (value[0], value[1])


# The matrices stored in FP8 (the layers' projections and MLP; the embedding, the head and the
# norms stay in the activations' dtype) and how many leading axes of each canonical per-layer
# leaf are its inputs: wq [d, H, K], wo [H, K, d], w1 [d, f], w2 [f, d].
FP8_MATRICES = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w1": 1, "w3": 1, "w2": 1}
# Hugging Face's module of each (the name a format's ``ignore`` list uses, and its scales').
FP8_MODULES = {
    "wq": "self_attn.q_proj",
    "wk": "self_attn.k_proj",
    "wv": "self_attn.v_proj",
    "wo": "self_attn.o_proj",
    "w1": "mlp.gate_proj",
    "w3": "mlp.up_proj",
    "w2": "mlp.down_proj",
}


def scale_leaves(model) -> dict[str, tuple[tuple[int, ...], tuple[str | None, ...]]]:
    """Each FP8 model's scale leaf: name -> (shape of one layer's, logical axes, layers first).

    - ``<w>_scale``: a weight's scales. Per channel, shaped like its outputs (wq ``[H, K]``, wo
      ``[d]``); in blocks of G inputs, ``[C / G, outputs...]`` (a block's scale repeated along
      its output rows), wo's ``[H, K / G, d]`` (or ``[H, 1, d]`` where a block spans whole
      heads), w2's ``[f / G, d]`` (split with its inputs under a tensor split).
    - ``<w>_in_scale``: a static per-tensor activation scale (one a layer).
    - ``k_scale``, ``v_scale``: an FP8 KV cache's scale per layer and K/V head.
    """
    out = {}
    d, h, hkv, k, f = model.d_model, model.n_heads, model.n_kv_heads, model.head_dim, model.d_ff
    outputs = {
        "wq": ((h, k), ("heads", "head_dim")),
        "wk": ((hkv, k), ("kv_heads", "head_dim")),
        "wv": ((hkv, k), ("kv_heads", "head_dim")),
        "wo": ((d,), ("embed",)),
        "w1": ((f,), ("mlp",)),
        "w3": ((f,), ("mlp",)),
        "w2": ((d,), ("embed",)),
    }
    q = model.quant
    if q is not None:
        names = [n for n in FP8_MATRICES if n != "w3" or model.mlp_matrices == 3]
        for name in names:
            shape, axes = outputs[name]
            if q.group:
                g = q.group
                if name == "wo":
                    if k % g and g % k:
                        raise ConfigError(
                            f"{model.source}: FP8 blocks of {g} inputs neither divide nor span "
                            f"whole heads of head_dim = {k}"
                        )
                    shape, axes = (h, max(1, k // g), d), ("heads", "groups", "embed")
                else:
                    inputs = f if name == "w2" else d
                    if inputs % g:
                        raise ConfigError(
                            f"{model.source}: FP8 blocks of {g} inputs do not divide "
                            f"{'d_ff' if name == 'w2' else 'd_model'} = {inputs}"
                        )
                    group_axis = "mlp" if name == "w2" else "groups"
                    shape, axes = (inputs // g, *shape), (group_axis, *axes)
            out[f"{name}_scale"] = (shape, ("layers", *axes))
            if q.activations == "tensor":
                out[f"{name}_in_scale"] = ((), ("layers",))
    if model.kv_dtype == FP8:
        out["k_scale"] = ((hkv,), ("layers", "kv_heads"))
        out["v_scale"] = ((hkv,), ("layers", "kv_heads"))
    return out


def scale_bytes(model, split: int = 1) -> int:
    """One layer's f32 scales on one device at tensor split ``split`` (their split axes
    divided, K/V heads at least one)."""
    total = 0
    for shape, axes in scale_leaves(model).values():
        n = 1
        for size, axis in zip(shape, axes[1:], strict=True):
            if axis in ("heads", "mlp"):
                size //= split
            elif axis == "kv_heads":
                size = max(1, size // split)
            n *= size
        total += 4 * n
    return total
