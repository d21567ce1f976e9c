"""Golden logits from Hugging Face transformers for the tiny checkpoints of
tests/tiny_checkpoints.py (Llama tied and untied, Mistral, Qwen2, Qwen3, ...; and
llama-tiny-untied in FP8): the reference that jaxpart's loader and layers are checked against.

    pip install torch transformers compressed-tensors   # by hand: never a jaxpart dependency
    python scripts/hf_golden.py                         # writes tests/golden/hf_tiny.json

"variants": for each variant, the first step's logits of each prompt and the greedy tokens
(GEN_LEN of them, the first included) of its transformers class (LlamaForCausalLM, ...), in
float32. Greedy decoding runs on transformers' KV cache, one token a step, as jaxpart decodes:
the RoPE scalings that depend on the current length (dynamic NTK, longrope) rotate each key
once, with the frequencies of its own step, and keep it so.

"chat": the chat template of CHAT_TEXTS, as apply_chat_template renders and tokenizes it.

"fp8": the FP8 folders (FP8_FORMATS) that transformers runs on a CPU, each loaded as it comes
(AutoModelForCausalLM.from_pretrained, float32): "first_logits" and greedy "tokens" as above,
"top_logits" (each step's largest logit, [batch, GEN_LEN]), the class and the dtype its
weights ran in, and "activations": how transformers quantised the layers' inputs. A
compressed-tensors folder is run as compressed-tensors defines it: weights decompressed to
float32, inputs fake-quantised to e4m3 ("token": dynamic, per token). transformers runs a
fine-grained ("fp8") folder on a CPU weight-only: it dequantises the blocks at load, and the
inputs stay as they are ("none"). "fp8_not_run" gives the formats left out, and why.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tiny", ROOT / "tests" / "tiny_checkpoints.py")
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)


def greedy(model):
    """The prompts' last-position logits, GEN_LEN greedy tokens and each step's top logit."""
    import torch

    prompts = torch.tensor(tiny.PROMPTS)
    with torch.no_grad():
        res = model(prompts, use_cache=True)
        first = res.logits[:, -1].numpy()
        # Plain greedy steps on the cache (generate() would suppress or stop at the EOS token).
        top, step = res.logits[:, -1].max(-1, keepdim=True)
        generated, tops = [step], [top]
        for _ in range(tiny.GEN_LEN - 1):
            res = model(step, past_key_values=res.past_key_values, use_cache=True)
            top, step = res.logits[:, -1].max(-1, keepdim=True)
            generated.append(step)
            tops.append(top)
    return first, torch.cat(generated, dim=1), torch.cat(tops, dim=1)


# FP8 formats that transformers does not run on a CPU as the folder means, and why.
FP8_NOT_RUN = {
    "fbgemm": "transformers' fbgemm_fp8 quantizer refuses to load without a GPU",
    "ct-static": (
        "compressed-tensors reads a 'frozen' folder as unquantised: it fake-quantises the "
        "stored e4m3 values again with weight_scale as if they were the 16-bit weights, and "
        "leaves the zero points the folder does not store uninitialised (logits vary run to "
        "run, NaN at times)"
    ),
}


def fp8_entry(model) -> dict:
    """A loaded FP8 folder's golden values and how transformers ran it."""
    # run first: compressed-tensors decompresses the weights at the model's first call
    first, tokens, top = greedy(model)
    schemes = [getattr(m, "quantization_scheme", None) for m in model.modules()]
    inputs = [s.input_activations.strategy for s in schemes if s and s.input_activations]
    activations = {getattr(strategy, "value", strategy) for strategy in inputs}
    dtypes = {str(p.dtype).removeprefix("torch.") for p in model.parameters()}
    assert len(activations) <= 1 and len(dtypes) == 1, (activations, dtypes)
    return {
        "class": type(model).__name__,
        "dtype": dtypes.pop(),
        "activations": activations.pop() if activations else "none",
        "first_logits": first.tolist(),
        "tokens": tokens.tolist(),
        "top_logits": top.tolist(),
    }


def main() -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    out = {
        "made_by": "python scripts/hf_golden.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompts": tiny.PROMPTS,
        "gen_len": tiny.GEN_LEN,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (_, architecture, _, _) in tiny.VARIANTS.items():
            folder = tiny.write_checkpoint(Path(tmp) / name, name)
            model_class = getattr(transformers, architecture)
            model = model_class.from_pretrained(folder, torch_dtype=torch.float32)
            model.eval()
            first, tokens, _ = greedy(model)
            out["variants"][name] = {
                "first_logits": first.tolist(),
                "tokens": tokens.tolist(),
            }
            print(f"{name}: tokens {tokens.tolist()}")
        # The chat template, as transformers' apply_chat_template renders and tokenizes it.
        folder = tiny.write_chat(tiny.write_checkpoint(Path(tmp) / "chat", "llama-tiny-untied"))
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        out["chat"] = {
            text: tokenizer.apply_chat_template(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            for text in tiny.CHAT_TEXTS
        }
        print(f"chat: {out['chat']}")
        out["fp8"] = {}
        for fmt in tiny.FP8_FORMATS:
            if fmt in FP8_NOT_RUN:
                continue
            folder = tiny.write_fp8_checkpoint(Path(tmp) / fmt, fmt)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            model.eval()
            out["fp8"][fmt] = fp8_entry(model)
            print(
                f"fp8 {fmt}: inputs {out['fp8'][fmt]['activations']}, {out['fp8'][fmt]['tokens']}"
            )
        out["fp8_not_run"] = FP8_NOT_RUN
    path = ROOT / "tests" / "golden" / "hf_tiny.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
