"""How far 2-byte dtypes and FP8 move the logits: the measurement behind
agreement.LOGIT_TOLERANCE and agreement.FP8_DEQUANTIZED_TOLERANCE.

    python scripts/logit_error.py [--sequences 64] [--steps 16] [--fp8]

dense16-tiny with random weights on 16 simulated CPU devices: the float32 reference generates
greedily; the reference, TP8xPP2 and layer-wise then run in bfloat16 and float16 (the same
weights, rounded), teacher-forced on those tokens. Prints, per dtype and method, the largest
|logit - float32 logit| at the forced token, and the same between the 2-byte placements and
the 2-byte reference.

``--fp8 [--model M]``: the same model with FP8 weights (per channel, activations per token)
and an FP8 KV cache, run with float32 and bfloat16 activations; the float32 reference of the
*dequantised* weights (scales applied with numpy) generates, and each FP8 placement is compared
with it and with the FP8 reference of its activation dtype. FP8's errors are in units of each
sequence's logit spread (the std of its first-step logits): quantisation noise grows with the
activations, so a model whose logits are 10x wider errs 10x more in absolute terms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxpart.runtime.sharding import ensure_cpu_devices  # noqa: E402

ensure_cpu_devices(16)

import numpy as np  # noqa: E402

from jaxpart.config import RunShape, load_mesh, load_model  # noqa: E402
from jaxpart.model.decoder import init_params  # noqa: E402
from jaxpart.planning.placement import METHODS  # noqa: E402
from jaxpart.runtime.engine import make_executor, random_prompts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=64)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--fp8", action="store_true")
    p.add_argument("--model", default="dense16-tiny", help="--fp8 only: the model")
    args = p.parse_args()
    if args.fp8:
        return fp8(args)
    cfg, mesh = load_model("dense16-tiny"), load_mesh("cpu16")
    params = init_params(cfg, 0)
    shape = RunShape(batch=args.sequences, prompt_len=16, gen_len=args.steps)
    prompts = random_prompts(cfg, shape, 1)
    ref = make_executor("reference", cfg, mesh, shape)
    placed = ref.place(params)
    tokens, _ = ref.generate(placed, prompts)
    exact = ref.teacher_forced(placed, prompts, tokens)
    for dtype in ("bfloat16", "float16"):
        low = cfg.with_dtype(dtype)
        runs = {}
        for method in METHODS:
            executor = make_executor(method, low, mesh, shape)
            runs[method] = executor.teacher_forced(executor.place(params), prompts, tokens)
        for method, run in runs.items():
            vs_f32 = np.abs(run.given_logit - exact.given_logit).max()
            vs_ref = np.abs(run.given_logit - runs["reference"].given_logit).max()
            print(
                f"{dtype:9} {method:10} max |dlogit| vs float32 {vs_f32:.4f}, "
                f"vs the {dtype} reference {vs_ref:.4f} "
                f"({args.sequences} sequences x {args.steps} steps)"
            )


def fp8(args) -> None:
    from jaxpart.model.decoder import dequantize_params

    base, mesh = load_model(args.model), load_mesh("cpu16")
    cfg = base.quantized().replace(kv_dtype="float8_e4m3fn")
    params = init_params(cfg, 0)
    wide = dequantize_params(params, cfg)
    shape = RunShape(batch=args.sequences, prompt_len=16, gen_len=args.steps)
    prompts = random_prompts(cfg, shape, 1)
    ref = make_executor("reference", cfg.dequantized().with_dtype("float32"), mesh, shape)
    placed = ref.place(wide)
    tokens, _ = ref.generate(placed, prompts)
    exact = ref.teacher_forced(placed, prompts, tokens)
    for dtype in ("float32", "bfloat16"):
        runs = {}
        for method in METHODS:
            executor = make_executor(method, cfg.with_dtype(dtype), mesh, shape)
            runs[method] = executor.teacher_forced(executor.place(params), prompts, tokens)
        spread = exact.spread[:, None]  # each sequence's logit std: the unit of FP8's error
        for method, run in runs.items():
            vs_deq = np.abs(run.given_logit - exact.given_logit) / spread
            vs_ref = np.abs(run.given_logit - runs["reference"].given_logit) / spread
            agree = (run.tokens == exact.tokens).mean()
            print(
                f"fp8/{dtype:9} {args.model} {method:10} max |dlogit| / logit std vs the "
                f"dequantised float32 model {vs_deq.max():.4f} (argmax agreement {agree:.1%}), "
                f"vs the FP8 reference {vs_ref.max():.4f} ({args.sequences} sequences x "
                f"{args.steps} steps; logit std {float(spread.mean()):.3f})"
            )


if __name__ == "__main__":
    main()
