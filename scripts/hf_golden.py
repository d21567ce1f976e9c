"""Golden logits from Hugging Face transformers for the tiny checkpoints of
tests/tiny_checkpoints.py (Llama tied and untied, Mistral, Qwen2, Qwen3): the reference that
jaxpart's loader and layers are checked against.

    pip install torch transformers       # by hand: never a jaxpart dependency
    python scripts/hf_golden.py          # writes tests/golden/hf_llama_tiny.json

For each variant: the first step's logits of each prompt and the greedy tokens (GEN_LEN of them,
the first included) of its transformers class (LlamaForCausalLM, ...), in float32.
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
        for name, (_, architecture, _) in tiny.VARIANTS.items():
            folder = tiny.write_checkpoint(Path(tmp) / name, name)
            model_class = getattr(transformers, architecture)
            model = model_class.from_pretrained(folder, torch_dtype=torch.float32)
            model.eval()
            prompts = torch.tensor(tiny.PROMPTS)
            with torch.no_grad():
                first = model(prompts).logits[:, -1].numpy()
                # Plain greedy steps (generate() would suppress or stop at the EOS token).
                sequence = prompts
                for _ in range(tiny.GEN_LEN):
                    step = model(sequence).logits[:, -1].argmax(-1, keepdim=True)
                    sequence = torch.cat([sequence, step], dim=1)
                tokens = sequence[:, prompts.shape[1] :]
            out["variants"][name] = {
                "first_logits": first.tolist(),
                "tokens": tokens.tolist(),
            }
            print(f"{name}: tokens {tokens.tolist()}")
    path = ROOT / "tests" / "golden" / "hf_tiny.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
