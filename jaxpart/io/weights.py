"""Hugging Face ``*.safetensors`` weights (Llama, Mistral, Qwen2, Qwen3 names; Phi-3's fused
``qkv_proj`` and ``gate_up_proj``) into jaxpart's canonical ``[L, ...]`` layout, with numpy and
the safetensors library: no jax, no torch.

A checkpoint is one ``model.safetensors`` or several files listed in
``model.safetensors.index.json``. Hugging Face stores a linear layer as ``[out, in]``; jaxpart
stores ``x @ w`` weights as ``[in, out]``, with the head axes split out (``wq [d, H, K]``,
``wo [H, K, d]``). Tensors are read lazily, a block at a time, when a device needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxpart.config import ConfigError, ModelConfig
from jaxpart.config.quant import FP8
from jaxpart.io.fp8 import LayerLeaf, fp8_leaves
from jaxpart.io.tensorfile import TensorFile

# ml_dtypes' float types, which numpy counts as kind "V"
ML_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
# canonical leaf -> (Hugging Face name within layer i, how to turn it into the leaf)
LAYER_TENSORS = {
    "ln1": ("input_layernorm.weight", "copy"),
    "ln2": ("post_attention_layernorm.weight", "copy"),
    "wq": ("self_attn.q_proj.weight", "heads_in"),
    "wk": ("self_attn.k_proj.weight", "kv_heads_in"),
    "wv": ("self_attn.v_proj.weight", "kv_heads_in"),
    "wo": ("self_attn.o_proj.weight", "heads_out"),
    "bq": ("self_attn.q_proj.bias", "heads"),
    "bk": ("self_attn.k_proj.bias", "kv_heads"),
    "bv": ("self_attn.v_proj.bias", "kv_heads"),
    "q_norm": ("self_attn.q_norm.weight", "copy"),
    "k_norm": ("self_attn.k_norm.weight", "copy"),
    "w1": ("mlp.gate_proj.weight", "transpose"),
    "w3": ("mlp.up_proj.weight", "transpose"),
    "w2": ("mlp.down_proj.weight", "transpose"),
    "ln1_out": ("post_attention_layernorm.weight", "copy"),
    "ln2_out": ("post_feedforward_layernorm.weight", "copy"),
}
# Gemma 2's norms around both blocks: its post_attention_layernorm is on the attention's
# output, and the MLP's input norm is pre_feedforward_layernorm.
SANDWICH_NAMES = {"ln2": "pre_feedforward_layernorm.weight"}


# Phi-3 stores q, k and v as one qkv_proj ([(H + 2 Hkv) K, d]: q's rows, then k's, then v's) and
# the gate and up projections as one gate_up_proj ([2 f, d]: the gate first), as its modelling
# code splits them (transformers' modeling_phi3.py: query_pos = H * K, then k, then v;
# ``gate, up_states = up_states.chunk(2, dim=-1)``). Leaf -> (fused name, part).
FUSED_TENSORS = {
    "wq": ("self_attn.qkv_proj.weight", "q"),
    "wk": ("self_attn.qkv_proj.weight", "k"),
    "wv": ("self_attn.qkv_proj.weight", "v"),
    "w1": ("mlp.gate_up_proj.weight", "gate"),
    "w3": ("mlp.gate_up_proj.weight", "up"),
}


def weights_file(folder: Path) -> Path | None:
    """A Hugging Face folder's index or single safetensors file (None: neither is there); one
    that is there but cannot be opened (a symlink loop, a dangling link, permissions) is a
    one-line error naming it."""
    for name in ("model.safetensors.index.json", "model.safetensors"):
        path = Path(folder) / name
        if os.path.lexists(path):
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
            return path
    return None


class Checkpoint:
    """The tensors of a Hugging Face folder, by name, opened lazily (``tensorfile``)."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"{index}: not an index of tensors (a 'weight_map' table): {e}"
                ) from None
        elif (folder / "model.safetensors").is_file():
            weight_map = None
        else:
            raise ConfigError(
                f"--model = '{folder}': no model.safetensors or model.safetensors.index.json "
                "there (weights come from safetensors files)"
            )
        files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        self._open = {name: TensorFile(folder / name) for name in files}
        if weight_map is None:
            only = self._open["model.safetensors"]
            weight_map = {key: "model.safetensors" for key in only.names}
        self.weight_map = weight_map
        self.folder = folder
        self.bytes_read = 0
        self.notes: list[str] = []

    def _file(self, name: str):
        if name not in self.weight_map:
            raise ConfigError(f"--model = '{self.folder}': the checkpoint has no tensor {name!r}")
        return self._open[self.weight_map[name]]

    def has(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> list[int]:
        return list(self._file(name).shape(name))

    def dtype(self, name: str) -> np.dtype:
        return self._file(name).dtype(name)

    def total_bytes(self) -> int:
        """Every tensor's bytes: the whole checkpoint."""
        return sum(self._file(name).nbytes(name) for name in self.weight_map)

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        """Only ``index`` (slices) of tensor ``name``, read through a memory map."""
        block = self._file(name).read(name, index)
        self.bytes_read += block.nbytes
        return block


def _read_block(ckpt: Checkpoint, name: str, how: str, ranges: list[range], k: int, rows: int = 0):
    """The canonical block ``ranges`` (one contiguous range an axis) of a leaf stored in
    Hugging Face's layout as tensor ``name`` (from its row ``rows`` on, where several leaves are
    fused in one tensor): only that block is read from disk."""
    if rows:
        ckpt = _Offset(ckpt, rows)

    def sl(r: range) -> slice:
        return slice(r.start, r.stop)

    if how == "copy":
        return ckpt.read(name, tuple(sl(r) for r in ranges))
    if how == "transpose":  # canonical [in, out] <- [out, in]
        return ckpt.read(name, (sl(ranges[1]), sl(ranges[0]))).T
    if how in ("heads", "kv_heads"):  # canonical [H, K] <- [H*K]
        h = ranges[0]
        block = ckpt.read(name, (slice(h.start * k, h.stop * k),)).reshape(len(h), k)
        return block[:, sl(ranges[1])]
    if how in ("heads_in", "kv_heads_in"):  # canonical [d, H, K] <- [H*K, d]
        d, h = ranges[0], ranges[1]
        block = ckpt.read(name, (slice(h.start * k, h.stop * k), sl(d)))
        return block.T.reshape(len(d), len(h), k)[:, :, sl(ranges[2])]
    # heads_out: canonical [H, K, d] <- [d, H*K]
    h, d = ranges[0], ranges[2]
    block = ckpt.read(name, (sl(d), slice(h.start * k, h.stop * k)))
    return block.T.reshape(len(h), k, len(d))[:, sl(ranges[1]), :]


class _Offset:
    """A checkpoint whose reads start ``rows`` rows into a (fused) tensor."""

    def __init__(self, ckpt: Checkpoint, rows: int):
        self.ckpt, self.rows = ckpt, rows

    def read(self, name: str, index: tuple) -> np.ndarray:
        first = index[0]
        return self.ckpt.read(
            name, (slice(first.start + self.rows, first.stop + self.rows),) + index[1:]
        )


def _hf_shape(how: str, canonical: tuple) -> tuple:
    """The shape Hugging Face stores a canonical (per-layer) leaf in."""
    if how == "transpose":
        return tuple(reversed(canonical))
    if how in ("heads", "kv_heads"):
        return (canonical[0] * canonical[1],)
    if how in ("heads_in", "kv_heads_in"):  # [d, H, K] <- [H*K, d]
        return (canonical[1] * canonical[2], canonical[0])
    if how == "heads_out":  # [H, K, d] <- [d, H*K]
        return (canonical[2], canonical[0] * canonical[1])
    return tuple(canonical)


class LazyLeaf:
    """A canonical leaf that is read from the checkpoint a block at a time, when asked: under
    ``jax.distributed`` each process reads only the blocks of its own devices."""

    def __init__(self, ckpt, shape, dtype, names, how, head_dim, rows=0):
        self.ckpt, self.shape, self.dtype = ckpt, tuple(shape), np.dtype(dtype)
        self.names, self.how, self.head_dim = names, how, head_dim  # names: one a layer, or one
        self.rows = rows  # the leaf's first row in a fused tensor
        self._blocks: dict = {}  # while placing: devices that hold the same block read it once

    def forget(self) -> None:
        self._blocks.clear()

    def whole(self) -> np.ndarray:
        """Every element (read once, not kept)."""
        return self._read([np.arange(n) for n in self.shape])

    def read(self, ids: list) -> np.ndarray:
        """The block at ``ids``: per axis, the canonical indices wanted (any order, repeats
        allowed: a stage's padding rows, copied K/V heads)."""
        ids = [np.asarray(i, int) for i in ids]
        key = tuple(i.tobytes() for i in ids)
        if key not in self._blocks:
            self._blocks[key] = self._read(ids)
        return self._blocks[key]

    def read_uncached(self, ids: list) -> np.ndarray:
        """``read``, without keeping the block (``io.fp8`` keeps its own e4m3 copy)."""
        return self._read([np.asarray(i, int) for i in ids])

    def _read(self, ids: list[np.ndarray]) -> np.ndarray:
        spans = [range(int(i.min()), int(i.max()) + 1) for i in ids]
        if len(self.names) > 1:  # stacked layers: one tensor a layer
            layers = [
                _read_block(
                    self.ckpt, self.names[layer], self.how, spans[1:], self.head_dim, self.rows
                )
                for layer in spans[0]
            ]
            block = np.stack(layers)
        else:
            block = _read_block(self.ckpt, self.names[0], self.how, spans, self.head_dim, self.rows)
        for axis, (i, span) in enumerate(zip(ids, spans, strict=True)):
            block = np.take(block, i - span.start, axis=axis)
        return block


# Every leaf read from a checkpoint as the devices ask (``read(ids)``, ``whole()``, ``forget()``)
LAZY_LEAVES = (LazyLeaf, LayerLeaf)


def lazy_hf_params(folder: str | Path, cfg: ModelConfig, leaves: dict) -> tuple[dict, Checkpoint]:
    """The checkpoint as a tree of ``LazyLeaf`` shaped like ``leaves`` (nothing read yet), and
    the checkpoint, whose ``bytes_read`` counts what has been read (and whose ``notes`` say
    what was made of it: matrices quantised to FP8 as read). An FP8 model's matrices and
    scales come through ``io.fp8``."""
    ckpt = Checkpoint(Path(folder))
    k = cfg.head_dim

    def leaf(like, names, how, rows=0, fused_rows=None):
        per_tensor = like.shape[1:] if len(names) > 1 else like.shape
        expected = _hf_shape(how, per_tensor)
        if fused_rows is not None:  # the whole fused tensor: every part's rows
            expected = (fused_rows, *expected[1:])
        for name in names:
            found = tuple(ckpt.shape(name))
            if found != expected:
                raise ConfigError(
                    f"--model = '{folder}': tensor {name} has shape {list(found)} where "
                    f"config.json implies {list(expected)}"
                )
            kind = ckpt.dtype(name)
            if kind.kind != "f" and kind.name not in ML_FLOATS:
                raise ConfigError(
                    f"--model = '{folder}': tensor {name} is {kind.name}, not a float type"
                )
        return LazyLeaf(ckpt, like.shape, like.dtype, names, how, k, rows)

    tree = {
        "embed": leaf(leaves["embed"], ["model.embed_tokens.weight"], "copy"),
        "final_norm": leaf(leaves["final_norm"], ["model.norm.weight"], "copy"),
    }
    if "head" in leaves:
        tree["head"] = leaf(leaves["head"], ["lm_head.weight"], "transpose")
    elif ckpt.has("lm_head.weight"):  # tied, but the checkpoint ships a head too: say which
        ckpt.notes.append(
            "config.json ties the LM head to the embedding (tie_word_embeddings): the "
            "checkpoint's lm_head.weight is not used"
        )
    tree["layers"] = {}
    fused = "model.layers.0.self_attn.qkv_proj.weight" in ckpt.weight_map
    q, kv, f = cfg.n_heads * k, cfg.n_kv_heads * k, cfg.d_ff
    first = {"q": 0, "k": q, "v": q + kv, "gate": 0, "up": f}
    total = {"q": q + 2 * kv, "k": q + 2 * kv, "v": q + 2 * kv, "gate": 2 * f, "up": 2 * f}
    for name, like in leaves["layers"].items():
        if "scale" in name:  # an FP8 model's scales: io.fp8
            continue
        how = LAYER_TENSORS[name][1]
        if fused and name in FUSED_TENSORS:
            hf_name, part = FUSED_TENSORS[name]
            names = [f"model.layers.{i}.{hf_name}" for i in range(cfg.n_layers)]
            tree["layers"][name] = leaf(like, names, how, first[part], total[part])
            continue
        hf_name = LAYER_TENSORS[name][0]
        if cfg.sandwich_norms:
            hf_name = SANDWICH_NAMES.get(name, hf_name)
        names = [f"model.layers.{i}.{hf_name}" for i in range(cfg.n_layers)]
        tree["layers"][name] = leaf(like, names, how)
    if cfg.quant is not None or cfg.kv_dtype == FP8:
        fp8_leaves(ckpt, cfg, tree, leaves, ckpt.notes)
    return tree, ckpt


def load_hf_params(folder: str | Path, cfg: ModelConfig, leaves: dict) -> dict:
    """The whole checkpoint in the canonical layout, as numpy arrays shaped like ``leaves``."""
    tree, _ = lazy_hf_params(folder, cfg, leaves)

    return {
        k: ({n: v.whole() for n, v in t.items()} if k == "layers" else t.whole())
        for k, t in tree.items()
    }
