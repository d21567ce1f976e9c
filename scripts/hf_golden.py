"""Golden logits from Hugging Face transformers for the tiny checkpoints of
tests/tiny_checkpoints.py (Llama tied and untied, Mistral, Qwen2, Qwen3): the reference that
jaxpart's loader and layers are checked against.

    pip install torch transformers       # by hand: never a jaxpart dependency
    python scripts/hf_golden.py          # writes tests/golden/hf_llama_tiny.json

For each variant: the first step's logits of each prompt and the greedy tokens (GEN_LEN of them,
the first included) of its transformers class (LlamaForCausalLM, ...), in float32. Greedy
decoding runs on transformers' KV cache, one token a step, as jaxpart decodes: the RoPE
scalings that depend on the current length (dynamic NTK, longrope) rotate each key once, with
the frequencies of its own step, and keep it so.
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
            prompts = torch.tensor(tiny.PROMPTS)
            with torch.no_grad():
                res = model(prompts, use_cache=True)
                first = res.logits[:, -1].numpy()
                # Plain greedy steps on the cache (generate() would suppress or stop at the EOS
                # token).
                step = res.logits[:, -1].argmax(-1, keepdim=True)
                generated = [step]
                for _ in range(tiny.GEN_LEN - 1):
                    res = model(step, past_key_values=res.past_key_values, use_cache=True)
                    step = res.logits[:, -1].argmax(-1, keepdim=True)
                    generated.append(step)
                tokens = torch.cat(generated, dim=1)
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
    path = ROOT / "tests" / "golden" / "hf_tiny.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
