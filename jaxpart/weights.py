"""Hugging Face ``*.safetensors`` weights (Llama, Mistral, Qwen2, Qwen3 names) into jaxpart's
canonical ``[L, ...]`` layout, with numpy and the safetensors library: no jax, no torch.

A checkpoint is one ``model.safetensors`` or several files listed in
``model.safetensors.index.json``. Hugging Face stores a linear layer as ``[out, in]``; jaxpart
stores ``x @ w`` weights as ``[in, out]``, with the head axes split out (``wq [d, H, K]``,
``wo [H, K, d]``). Tensors are opened lazily: each is read when its leaf is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxpart.config import ConfigError, ModelConfig

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
}


class Checkpoint:
    """The tensors of a Hugging Face folder, by name, opened lazily."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (folder / "model.safetensors").is_file():
            weight_map = None
        else:
            raise ConfigError(
                f"--model = '{folder}': no model.safetensors or model.safetensors.index.json "
                "there (weights come from safetensors files)"
            )
        files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        self._open = {name: safe_open(str(folder / name), framework="numpy") for name in files}
        if weight_map is None:
            only = self._open["model.safetensors"]
            weight_map = {key: "model.safetensors" for key in only.keys()}
        self.weight_map = weight_map
        self.folder = folder

    def get(self, name: str) -> np.ndarray:
        if name not in self.weight_map:
            raise ConfigError(f"--model = '{self.folder}': the checkpoint has no tensor {name!r}")
        return self._open[self.weight_map[name]].get_tensor(name)


def _convert(x: np.ndarray, how: str, cfg: ModelConfig) -> np.ndarray:
    k = cfg.head_dim
    if how == "copy":
        return x
    if how == "transpose":
        return x.T
    if how in ("heads_in", "kv_heads_in"):  # [H*K, d] -> [d, H, K]
        return x.T.reshape(x.shape[1], -1, k)
    if how == "heads_out":  # [d, H*K] -> [H, K, d]
        return x.T.reshape(-1, k, x.shape[0])
    return x.reshape(-1, k)  # a bias: [H*K] -> [H, K]


def load_hf_params(folder: str | Path, cfg: ModelConfig, leaves: dict) -> dict:
    """The checkpoint's weights in the canonical layout, as numpy arrays shaped like ``leaves``
    (the model's own parameter tree, whose shapes are checked against the checkpoint's)."""
    ckpt = Checkpoint(Path(folder))

    def checked(name: str, x: np.ndarray, like) -> np.ndarray:
        if tuple(x.shape) != tuple(like.shape):
            raise ConfigError(
                f"--model = '{folder}': tensor {name} has shape {list(x.shape)} where "
                f"config.json implies {list(like.shape)}"
            )
        return x

    params = {
        "embed": checked("embed", ckpt.get("model.embed_tokens.weight"), leaves["embed"]),
        "final_norm": checked("final_norm", ckpt.get("model.norm.weight"), leaves["final_norm"]),
    }
    if "head" in leaves:
        params["head"] = checked("head", ckpt.get("lm_head.weight").T, leaves["head"])
    layers = {}
    for leaf, like in leaves["layers"].items():
        hf_name, how = LAYER_TENSORS[leaf]
        stacked = [
            _convert(ckpt.get(f"model.layers.{i}.{hf_name}"), how, cfg) for i in range(cfg.n_layers)
        ]
        layers[leaf] = checked(f"layers.{leaf}", np.stack(stacked), like)
    params["layers"] = layers
    return params
