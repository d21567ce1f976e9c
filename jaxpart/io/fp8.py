"""FP8 matrices from a Hugging Face folder, with their scales, in jaxpart's canonical layout
(``config.quant.scale_leaves``): stored FP8 (compressed-tensors, fbgemm_fp8, fine-grained
``fp8``) or 16-bit and quantised as they are read (``--quantize fp8``; a module a format's
``ignore`` list keeps in 16 bits). No jax.

A checkpoint's scales multiply its e4m3 values, whatever their name (``weight_scale``, or the
fine-grained format's ``weight_scale_inv``):

- per tensor, ``[]`` or ``[1]``: the one value, repeated over the output channels;
- per channel, ``[out, 1]``: reshaped to the canonical output axes (wq's rows, H x K, to
  ``[H, K]``);
- in blocks, ``[ceil(out / rows), ceil(in / columns)]``: each repeated over its block's output
  rows, the input blocks leading (``[in / columns, outputs...]``; wo's ``[H, K / columns, d]``).

A layer's matrix is made whole once (one read of its tensor) and its blocks are cut from it as
the devices ask; the scales are kept, the values dropped once the leaf is placed.
"""

from __future__ import annotations

import numpy as np

from jaxpart.config import ConfigError, ModelConfig
from jaxpart.config.quant import FP8_MATRICES, FP8_MODULES

FP8_DTYPES = ("float8_e4m3fn",)


class LayerLeaf:
    """A leaf ``[L, ...]`` made a layer at a time (``layer(i)``), as the devices ask for blocks
    of it: ``read(ids)``, ``whole()`` and ``forget()``, as ``weights.LazyLeaf`` offers them."""

    shape: tuple[int, ...]

    def layer(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def read(self, ids: list) -> np.ndarray:
        ids = [np.asarray(i, int) for i in ids]
        layers = [self.layer(int(i)) for i in ids[0]]
        return np.stack(layers)[np.ix_(np.arange(len(layers)), *ids[1:])]

    def whole(self) -> np.ndarray:
        return self.read([np.arange(n) for n in self.shape])

    def forget(self) -> None:
        pass


class Fp8Matrix(LayerLeaf):
    """One FP8 matrix leaf ``[L, ...]`` of the canonical tree, read a layer at a time: its
    values and, through ``scales_of`` (``Fp8Scales``), its scales."""

    def __init__(self, ckpt, cfg: ModelConfig, name: str, source, scale_shape):
        self.ckpt, self.cfg, self.name, self.source = ckpt, cfg, name, source
        self.shape = tuple(source.shape)
        self.dtype = np.dtype("float8_e4m3fn")  # as ml_dtypes names it
        self.scale_shape = tuple(scale_shape)
        self.inputs = FP8_MATRICES[name]
        self._values: dict[int, np.ndarray] = {}
        self._scales: dict[int, np.ndarray] = {}

    def layer(self, i: int) -> np.ndarray:
        if i not in self._values:
            self._values[i], self._scales[i] = self._make(i)
        return self._values[i]

    def scales_of(self, i: int) -> np.ndarray:
        """Layer i's scales: kept from placing its values (made again only if never made)."""
        if i not in self._scales:
            self._scales[i] = self._make(i)[1]
        return self._scales[i]

    def _make(self, i: int):
        from jaxpart.model.quant import quantize_leaf

        hf = self.source.names[i]
        ids = [np.arange(n) for n in self.shape[1:]]
        stored = self.ckpt.dtype(hf)
        whole = self.source.read_uncached([np.asarray([i]), *ids])[0]
        if stored.name not in FP8_DTYPES:  # 16-bit: quantised here
            return quantize_leaf(whole, self.inputs, self.scale_shape)
        base = hf.removesuffix(".weight")
        for suffix in ("weight_scale", "weight_scale_inv"):
            if self.ckpt.has(f"{base}.{suffix}"):
                raw = self.ckpt.read(f"{base}.{suffix}").astype(np.float32)
                return whole, self._canonical_scale(raw, f"{base}.{suffix}")
        raise ConfigError(
            f"--model = '{self.ckpt.folder}': FP8 tensor {hf} has no weight_scale or "
            "weight_scale_inv beside it"
        )

    def _canonical_scale(self, raw: np.ndarray, where: str) -> np.ndarray:
        """A checkpoint's scale tensor -> the canonical scale of one layer (module docstring)."""
        outputs = self.shape[1 + self.inputs :]
        n_out = int(np.prod(outputs))
        n_in = int(np.prod(self.shape[1 : 1 + self.inputs]))
        target = self.scale_shape
        if raw.size == 1:
            return np.full(target, raw.reshape(()), np.float32)
        if raw.shape in ((n_out, 1), (n_out,)) and tuple(target) == tuple(outputs):
            return raw.reshape(target)
        blocked = len(target) > len(outputs)
        if raw.ndim == 2 and blocked:
            rows = -(-n_out // raw.shape[0])
            columns = -(-n_in // raw.shape[1])
            if -(-n_out // rows) == raw.shape[0] and -(-n_in // columns) == raw.shape[1]:
                per_row = np.repeat(raw, rows, axis=0)[:n_out].T  # [in blocks, out]
                if self.name == "wo":  # [H, K / columns or 1, d]
                    h, k = self.shape[1], self.shape[2]
                    head_block = (np.arange(h) * k) // columns
                    per_head = max(1, k // columns)
                    first = head_block[:, None] + np.arange(per_head)[None, :]
                    return per_row[first].reshape(target)
                return per_row.reshape(target)
        raise ConfigError(
            f"--model = '{self.ckpt.folder}': tensor {where} has shape {list(raw.shape)}, "
            f"which is not a per-tensor, per-channel or block scale of a {list(self.shape[1:])} "
            f"matrix in {self.cfg.quant.describe()}"
        )

    def forget(self) -> None:
        self._values.clear()
        self.source.forget()


class Fp8Scales(LayerLeaf):
    """A matrix's scale leaf ``[L, ...]`` (``Fp8Matrix``'s, made with its values)."""

    def __init__(self, matrix: Fp8Matrix, n_layers: int):
        self.matrix = matrix
        self.shape = (n_layers, *matrix.scale_shape)
        self.dtype = np.dtype(np.float32)

    def layer(self, i: int) -> np.ndarray:
        return self.matrix.scales_of(i)


class StoredScales(LayerLeaf):
    """Per-layer scales read from tensors beside the weights (a static ``input_scale``, an FP8
    KV cache's ``k_scale``), shaped ``[L, *shape]``; a layer without one gets ``missing`` (a KV
    cache's 1: the stored values are K and V themselves; an input scale's 0: that module, kept
    16-bit by the format's ``ignore``, quantises its activations dynamically)."""

    def __init__(self, ckpt, names_per_layer: list[list[str]], shape, missing: float):
        self.ckpt, self.names, self.missing = ckpt, names_per_layer, missing
        self.shape = (len(names_per_layer), *shape)
        self.dtype = np.dtype(np.float32)
        self._layers: dict[int, np.ndarray] = {}

    def layer(self, i: int) -> np.ndarray:
        if i not in self._layers:
            self._layers[i] = self._make(i)
        return self._layers[i]

    def _make(self, i: int) -> np.ndarray:
        for name in self.names[i]:
            if self.ckpt.has(name):
                raw = self.ckpt.read(name).astype(np.float32).reshape(-1)
                if raw.size == 1:
                    return np.full(self.shape[1:], raw[0], np.float32)
                if raw.size == int(np.prod(self.shape[1:])):
                    return raw.reshape(self.shape[1:])
                raise ConfigError(
                    f"--model = '{self.ckpt.folder}': tensor {name} has {raw.size} values where "
                    f"one or {int(np.prod(self.shape[1:]))} (one a K/V head) are expected"
                )
        return np.full(self.shape[1:], self.missing, np.float32)


def fp8_leaves(ckpt, cfg: ModelConfig, tree: dict, leaves: dict, notes: list[str]) -> None:
    """Replace ``tree``'s 16-bit views of the FP8 matrices by ``Fp8Matrix`` leaves and add
    every scale leaf ``leaves`` asks for. ``notes`` gets one line for the matrices quantised
    as they are read (a 16-bit checkpoint, or modules the format's ``ignore`` keeps 16-bit)."""
    from jaxpart.config.quant import scale_leaves

    quantised: dict[str, tuple[int, list[str]]] = {}
    scales = scale_leaves(cfg)
    layers = tree["layers"]
    for name in FP8_MATRICES:
        if name not in layers or f"{name}_scale" not in scales:
            continue
        source = layers[name]
        kinds = [ckpt.dtype(n).name for n in dict.fromkeys(source.names)]
        wide = [k for k in kinds if k not in FP8_DTYPES]
        if wide:
            quantised[name] = (len(wide), sorted(set(wide)))
        matrix = Fp8Matrix(ckpt, cfg, name, source, scales[f"{name}_scale"][0])
        layers[name] = matrix
        layers[f"{name}_scale"] = Fp8Scales(matrix, cfg.n_layers)
        if f"{name}_in_scale" in leaves["layers"]:
            names = [
                [f"model.layers.{i}.{FP8_MODULES[name]}.input_scale"] for i in range(cfg.n_layers)
            ]
            layers[f"{name}_in_scale"] = StoredScales(ckpt, names, (), missing=0.0)
    for kind in ("k", "v"):
        if f"{kind}_scale" in leaves["layers"]:
            names = [
                [
                    f"model.layers.{i}.self_attn.{kind}_scale",
                    f"model.layers.{i}.self_attn.{kind}_proj.{kind}_scale",
                    f"model.layers.{i}.self_attn.kv_scale",
                ]
                for i in range(cfg.n_layers)
            ]
            layers[f"{kind}_scale"] = StoredScales(ckpt, names, (cfg.n_kv_heads,), missing=1.0)
    if quantised:
        what = ", ".join(
            f"{FP8_MODULES[n].split('.')[-1]} x{k} ({'/'.join(d)})"
            for n, (k, d) in quantised.items()
        )
        notes.append(f"quantised to FP8 per output channel as read: {what}")
