"""Tiny random Hugging Face checkpoints, written the same way every time from a seed:
config.json, model.safetensors and a tokenizer.json. The Llama architecture (GQA: 4 query heads
per K/V head, SwiGLU) tied and untied, Mistral, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k
norms); and Llama with each RoPE scaling transformers ships (llama3 as Llama 3.1 writes it, in
the keys of transformers before 5.0 and in 5.x's, yarn, linear, dynamic, longrope), and a
transformers 5 folder with a non-default rope_theta. scripts/hf_golden.py runs them through
Hugging Face transformers for the golden file; the tests run them through jaxpart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Llama 3.1's own block (meta-llama/Llama-3.1-8B config.json), theta 5e5; the tiny model's
# head_dim of 16 puts its 8 frequencies in all three of llama3's wavelength bands.
LLAMA31 = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
# longrope's factors for the tiny head_dim of 16 (one a frequency)
SHORT_FACTORS = [1.0, 1.0, 1.1, 1.2, 1.4, 1.8, 2.5, 3.0]
LONG_FACTORS = [1.0, 1.3, 1.9, 2.8, 4.0, 6.0, 9.0, 12.0]
# How transformers 5 writes a config: rope_parameters with rope_theta inside, dtype.
V5 = {"rope_theta": None, "rope_scaling": None, "torch_dtype": None, "dtype": "float32"}
GEMMA3 = {
    "hidden_act": None,
    "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 32,
    "sliding_window": 5,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
}
# name -> (model_type, architecture class, tied head, config changes: None values are dropped)
VARIANTS = {
    "llama-tiny-untied": ("llama", "LlamaForCausalLM", False, {}),
    "llama-tiny-tied": ("llama", "LlamaForCausalLM", True, {}),
    "mistral-tiny": ("mistral", "MistralForCausalLM", False, {}),
    "qwen2-tiny": ("qwen2", "Qwen2ForCausalLM", True, {}),
    "qwen3-tiny": ("qwen3", "Qwen3ForCausalLM", False, {}),
    "llama-theta5e5-v5": (
        "llama",
        "LlamaForCausalLM",
        False,
        V5 | {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    ),
    "llama31-rope": (
        "llama",
        "LlamaForCausalLM",
        False,
        {"rope_theta": 500000.0, "rope_scaling": LLAMA31, "max_position_embeddings": 131072},
    ),
    "llama31-rope-v5": (
        "llama",
        "LlamaForCausalLM",
        False,
        V5
        | {
            "rope_parameters": LLAMA31 | {"rope_theta": 500000.0},
            "max_position_embeddings": 131072,
        },
    ),
    "llama-yarn": (
        "llama",
        "LlamaForCausalLM",
        False,
        {
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "max_position_embeddings": 128,
        },
    ),
    "llama-linear": (
        "llama",
        "LlamaForCausalLM",
        False,
        {"rope_scaling": {"type": "linear", "factor": 2.0}},
    ),
    # max_position_embeddings 10: decoding runs past it, where dynamic NTK rescales
    "llama-dynamic": (
        "llama",
        "LlamaForCausalLM",
        False,
        {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 10},
    ),
    # a Mistral-v0.1-style window on every layer, shorter than the prompt: the prefill and every
    # decode step see only their last 5 keys
    "mistral-window": (
        "mistral",
        "MistralForCausalLM",
        False,
        {"sliding_window": 5},
    ),
    # Qwen2's window on the layers from max_window_layers up only
    "qwen2-window": (
        "qwen2",
        "Qwen2ForCausalLM",
        True,
        {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 8},
    ),
    # Phi-3: fused qkv_proj and gate_up_proj, a window (as Phi-3-mini-4k's 2047), and longrope
    # as Phi-3-mini-128k writes it ("type", the top-level original_max_position_embeddings)
    "phi3-tiny": ("phi3", "Phi3ForCausalLM", False, {"sliding_window": 6}),
    "phi3-longrope": (
        "phi3",
        "Phi3ForCausalLM",
        False,
        {
            "rope_scaling": {
                "type": "longrope",
                "short_factor": SHORT_FACTORS,
                "long_factor": LONG_FACTORS,
            },
            "original_max_position_embeddings": 10,
            "max_position_embeddings": 64,
        },
    ),
    # Gemma 2: tanh-GeGLU, (1 + w) norms around both blocks, embeddings times sqrt(d), its
    # own score scale (query_pre_attn_scalar 32, not head_dim 16), soft-capped scores and
    # logits (Gemma 2's cap of 30, on logits of about that size), windows on every other layer
    "gemma2-tiny": (
        "gemma2",
        "Gemma2ForCausalLM",
        True,
        {
            "hidden_act": None,
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": 32,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 32,
            "layer_types": ["sliding_attention", "full_attention"] * 8,
            "rms_norm_eps": 1e-6,
            "pad_token_id": 0,
        },
    ),
    # Gemma 3 text: Gemma 2's layer with per-head q/k norms, no soft-caps, windows of 5 on five
    # layers in six (layers 5 and 11 attend to everything), and two RoPEs: the windowed layers'
    # plain base 1e4, the global layers' 1e6 with linear x8 (as Gemma 3 4B and up), in the keys
    # of transformers before 5.0 and in 5.x's nested rope_parameters
    "gemma3-tiny": ("gemma3_text", "Gemma3ForCausalLM", True, GEMMA3),
    "gemma3-tiny-v5": (
        "gemma3_text",
        "Gemma3ForCausalLM",
        True,
        GEMMA3
        | V5
        | {
            "rope_local_base_freq": None,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        },
    ),
    # original context 10: the prompt uses the short factors, decoding past it the long ones
    "llama-longrope": (
        "llama",
        "LlamaForCausalLM",
        False,
        {
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": SHORT_FACTORS,
                "long_factor": LONG_FACTORS,
                "original_max_position_embeddings": 10,
            },
            "max_position_embeddings": 64,
        },
    ),
}
PROMPTS = [[1, 5, 9, 2, 33, 17, 8, 41], [7, 7, 3, 60, 12, 5, 29, 50]]
GEN_LEN = 6
WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(61)]


def config(
    tied: bool,
    model_type: str = "llama",
    architecture: str = "LlamaForCausalLM",
    changes: dict | None = None,
) -> dict:
    extra = {
        "llama": {"attention_bias": False, "mlp_bias": False},
        "mistral": {"sliding_window": None},
        "qwen2": {"use_sliding_window": False, "sliding_window": None},
        "qwen3": {"attention_bias": False, "use_sliding_window": False, "sliding_window": None},
        "phi3": {"sliding_window": None, "pad_token_id": 2},
        "gemma2": {},
        "gemma3_text": {},
    }[model_type]
    return {
        **extra,
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": 128,
        "intermediate_size": 96,
        "num_hidden_layers": 16,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 64,
        "max_position_embeddings": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "rope_scaling": None,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    } | (changes or {})


def tensors(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint, in Hugging Face's names and [out, in] layout."""
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]

    def normal(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    gemma = cfg["model_type"] in ("gemma2", "gemma3_text")
    one = 0.0 if gemma else 1.0  # Gemma's norms scale by 1 + w: w near 0 is a scale near 1
    out = {"model.embed_tokens.weight": normal(v, d, scale=1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = one + normal(d, scale=0.1)
        out[p + "post_attention_layernorm.weight"] = one + normal(d, scale=0.1)
        if gemma:
            out[p + "pre_feedforward_layernorm.weight"] = normal(d, scale=0.1)
            out[p + "post_feedforward_layernorm.weight"] = normal(d, scale=0.1)
        out[p + "self_attn.q_proj.weight"] = normal(q, d, scale=d**-0.5)
        out[p + "self_attn.k_proj.weight"] = normal(kv, d, scale=d**-0.5)
        out[p + "self_attn.v_proj.weight"] = normal(kv, d, scale=d**-0.5)
        out[p + "self_attn.o_proj.weight"] = normal(d, q, scale=q**-0.5)
        if cfg["model_type"] == "qwen2":
            out[p + "self_attn.q_proj.bias"] = normal(q, scale=0.1)
            out[p + "self_attn.k_proj.bias"] = normal(kv, scale=0.1)
            out[p + "self_attn.v_proj.bias"] = normal(kv, scale=0.1)
        if cfg["model_type"] in ("qwen3", "gemma3_text"):
            out[p + "self_attn.q_norm.weight"] = one + normal(cfg["head_dim"], scale=0.1)
            out[p + "self_attn.k_norm.weight"] = one + normal(cfg["head_dim"], scale=0.1)
        out[p + "mlp.gate_proj.weight"] = normal(f, d, scale=d**-0.5)
        out[p + "mlp.up_proj.weight"] = normal(f, d, scale=d**-0.5)
        out[p + "mlp.down_proj.weight"] = normal(d, f, scale=f**-0.5)
    if cfg["model_type"] == "phi3":  # fused: q, k, v rows in one tensor; gate, then up
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            out[p + "self_attn.qkv_proj.weight"] = np.concatenate(
                [out.pop(p + f"self_attn.{x}_proj.weight") for x in "qkv"]
            )
            out[p + "mlp.gate_up_proj.weight"] = np.concatenate(
                [out.pop(p + "mlp.gate_proj.weight"), out.pop(p + "mlp.up_proj.weight")]
            )
    out["model.norm.weight"] = one + normal(d, scale=0.1)
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = normal(v, d, scale=d**-0.5)
    return out


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path))


def write_checkpoint(folder: Path, variant: str, seed: int = 0, bf16: bool = False) -> Path:
    """``variant``'s folder; ``bf16``: its tensors and dtype bfloat16, as the Hub's are."""
    import ml_dtypes
    from safetensors.numpy import save_file

    model_type, architecture, tied, changes = VARIANTS[variant]
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config(tied, model_type, architecture, changes)
    if bf16:
        cfg["torch_dtype"] = "bfloat16"
    written = {k: v for k, v in cfg.items() if v is not None or k not in changes}
    (folder / "config.json").write_text(json.dumps(written, indent=2))
    weights = tensors(cfg, seed)
    if bf16:
        weights = {k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    save_file(weights, str(folder / "model.safetensors"))
    write_tokenizer(folder / "tokenizer.json")
    return folder


# A chat template in the style of the Hub's: the BOS token, a turn per message, the generation
# prompt; trim_blocks / lstrip_blocks matter (the newlines after the tags), and a system turn is
# refused with raise_exception. Words from the tiny vocabulary, so that the ids mean something.
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{% for message in messages %}\n"
    "    {% if message['role'] == 'system' %}\n"
    "        {{ raise_exception('no system turns') }}\n"
    "    {% endif %}\n"
    "w1 {{ message['role'] }} {{ message['content'] | trim }} w2 \n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}w3 assistant{% endif %}"
)
CHAT_TEXTS = ["w5 w6 w7", "Hi", "  w9  "]


def write_chat(folder: Path) -> Path:
    """The tokenizer's config beside its tokenizer.json: its special tokens and the chat
    template, as transformers saves them."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


# FP8 folders: llama-tiny-untied's tensors quantised the way each format stores them (its own
# config.json block; the layers' projections in e4m3, their scales beside them; the embedding,
# norms and head in 16 bits). ``dequantized`` turns one back into 16-bit tensors with numpy.
FP8_MAX = 448.0
STATIC_INPUT_SCALE = 6.0 / FP8_MAX  # a calibrated-looking static activation scale
KV_SCALE = 0.05
FP8_FORMATS = {
    "ct-channel": {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "channel",
                    "symmetric": True,
                    "dynamic": False,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "token",
                    "symmetric": True,
                    "dynamic": True,
                },
            }
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
    },
    "ct-static": {
        "quant_method": "compressed-tensors",
        "format": "naive-quantized",
        "quantization_status": "frozen",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "tensor",
                    "symmetric": True,
                    "dynamic": False,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "tensor",
                    "symmetric": True,
                    "dynamic": False,
                },
            }
        },
        "ignore": ["lm_head", "re:.*layers\\.3\\.mlp\\.down_proj$"],
        "kv_cache_scheme": {
            "num_bits": 8,
            "type": "float",
            "strategy": "tensor",
            "dynamic": False,
            "symmetric": True,
        },
    },
    "fbgemm": {
        "quant_method": "fbgemm_fp8",
        "activation_scale_ub": 1200.0,
        "modules_to_not_convert": ["lm_head"],
    },
    "fine-grained": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [32, 32],
    },
}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _quantize(w: np.ndarray, how: str, block=(32, 32)):
    """An [out, in] matrix -> (e4m3 values, scale) as the format stores them."""
    import ml_dtypes

    if how == "tensor":
        scale = np.array([np.abs(w).max() / FP8_MAX], np.float32)
        full = scale
    elif how == "channel":
        scale = (np.abs(w).max(axis=1, keepdims=True) / FP8_MAX).astype(np.float32)
        full = scale
    else:
        rows, cols = block
        out, inp = w.shape
        grid = np.abs(w).reshape(out // rows, rows, inp // cols, cols).max(axis=(1, 3))
        scale = (grid / FP8_MAX).astype(np.float32)
        full = np.repeat(np.repeat(scale, rows, axis=0), cols, axis=1)
    q = np.clip(w / full, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)
    return q, scale


def write_fp8_checkpoint(folder: Path, fmt: str, seed: int = 0) -> Path:
    """llama-tiny-untied in FP8 format ``fmt`` (FP8_FORMATS), activations in bfloat16."""
    from safetensors.numpy import save_file

    qc = FP8_FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config(False) | {"torch_dtype": "bfloat16", "quantization_config": qc}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    how = {"ct-channel": "channel", "ct-static": "tensor", "fbgemm": "channel"}.get(fmt, "block")
    out = {}
    for name, w in tensors(cfg, seed).items():
        module = name.removesuffix(".weight")
        ignored = fmt == "ct-static" and module.endswith("layers.3.mlp.down_proj")  # its ignore
        if name.split(".")[-2] not in PROJECTIONS or ignored:
            out[name] = w
            continue
        q, scale = _quantize(w, how)
        out[name] = q
        out[f"{module}.weight_scale_inv" if fmt == "fine-grained" else f"{module}.weight_scale"] = (
            scale
        )
        if fmt == "ct-static":
            out[f"{module}.input_scale"] = np.array([STATIC_INPUT_SCALE], np.float32)
    if fmt == "ct-static":
        for i in range(cfg["num_hidden_layers"]):
            for kind in "kv":
                out[f"model.layers.{i}.self_attn.{kind}_scale"] = np.array([KV_SCALE], np.float32)
    save_file(out, str(folder / "model.safetensors"))
    write_tokenizer(folder / "tokenizer.json")
    return folder


def dequantized(folder: Path, into: Path) -> Path:
    """An FP8 folder's weights times their scales, with numpy, as a float32 folder."""
    import ml_dtypes  # noqa: F401 (the e4m3 dtype)
    from safetensors.numpy import save_file

    from jaxpart.io.tensorfile import TensorFile

    cfg = json.loads((folder / "config.json").read_text())
    qc = cfg.pop("quantization_config")
    cfg["torch_dtype"] = "float32"
    into.mkdir(parents=True, exist_ok=True)
    (into / "config.json").write_text(json.dumps(cfg, indent=2))
    f = TensorFile(folder / "model.safetensors")
    out = {}
    for name in f.names:
        if name.endswith(("scale", "scale_inv")):
            continue
        w = f.read(name).astype(np.float32)
        module = name.removesuffix(".weight")
        for suffix in ("weight_scale", "weight_scale_inv"):
            if f"{module}.{suffix}" in f.names:
                s = f.read(f"{module}.{suffix}").astype(np.float32)
                if s.ndim == 2 and s.shape[1] > 1:  # blocks
                    rows, cols = qc["weight_block_size"]
                    s = np.repeat(np.repeat(s, rows, axis=0), cols, axis=1)
                w = w * s  # [1], [out, 1] or the blocks expanded: each broadcasts
        out[name] = w
    save_file(out, str(into / "model.safetensors"))
    write_tokenizer(into / "tokenizer.json")
    return into
