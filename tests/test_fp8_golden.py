"""FP8 folders against Hugging Face transformers (golden file from scripts/hf_golden.py, its
"fp8" section): jaxpart's reference, teacher-forced on transformers' greedy tokens, chooses
differently only within the measured FP8 tolerance, and its first step's logits are within it.
Where transformers quantises the layers' inputs as jaxpart does (compressed-tensors, per token),
the two compute the same arithmetic and agree to float32 rounding; where it runs the folder
weight-only (fine-grained on a CPU: the dequantised model), they differ by jaxpart's activation
quantisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_checkpoints as tiny

from jaxpart.config import RunShape, load_mesh, load_model
from jaxpart.measure.agreement import FP8_DEQUANTIZED_TOLERANCE, agree
from jaxpart.runtime.executors.base import Forced

GOLDEN = json.loads((Path(__file__).parent / "golden" / "hf_tiny.json").read_text())
FP8 = GOLDEN["fp8"]
PROMPTS = np.asarray(tiny.PROMPTS, np.int32)
# Where transformers fake-quantises the inputs as jaxpart quantises them, the logits differ by
# float32 rounding: measured 1.4e-6 at the first step and 7.2e-7 teacher-forced (ct-channel,
# at most over the vocab and the steps, the tiny model's logit spread being about 1); the bound
# is twice the larger.
SAME_ARITHMETIC_TOLERANCE = 3e-6


def test_every_fp8_format_is_in_the_golden_file_or_says_why_not():
    assert set(FP8) | set(GOLDEN["fp8_not_run"]) == set(tiny.FP8_FORMATS)
    assert not set(FP8) & set(GOLDEN["fp8_not_run"])
    assert all(e["dtype"] == "float32" for e in FP8.values())


@pytest.mark.parametrize("fmt", list(FP8))
def test_fp8_folders_compute_transformers_logits(tmp_path, fmt):
    """The reference executor on the FP8 folder, in float32: its first step's logits and its
    teacher-forced choices against transformers' (FP8_DEQUANTIZED_TOLERANCE; the float32
    rounding bound where transformers quantises the inputs as jaxpart does)."""
    from jaxpart.runtime.engine import make_executor, model_params

    golden = FP8[fmt]
    cfg = load_model(str(tiny.write_fp8_checkpoint(tmp_path / fmt, fmt))).with_dtype("float32")
    same = golden["activations"] == cfg.quant.activations
    bound = SAME_ARITHMETIC_TOLERANCE if same else FP8_DEQUANTIZED_TOLERANCE
    shape = RunShape(batch=2, prompt_len=8, gen_len=tiny.GEN_LEN)
    executor = make_executor("reference", cfg, load_mesh("cpu16"), shape)
    placed = executor.place(model_params(cfg, 0))

    # FP8's tolerances are in units of each sequence's logit spread (agreement.py)
    golden_first = np.asarray(golden["first_logits"], np.float32)
    spread = golden_first.std(axis=-1)
    first = np.asarray(executor.prefill(placed, PROMPTS).first_logits)
    first_delta = float((np.abs(first - golden_first) / spread[:, None]).max())
    assert first_delta <= bound, f"{fmt}: first step, max |dlogit| {first_delta:.3g} > {bound}"

    tokens = np.asarray(golden["tokens"], np.int32)
    top = np.asarray(golden["top_logits"], np.float32)
    forced = executor.teacher_forced(placed, PROMPTS, tokens)
    reference = Forced(tokens, top, top, spread)
    result = agree("reference", cfg.precision, reference, forced, FP8_DEQUANTIZED_TOLERANCE)
    assert result.ok, result
    assert result.agreement >= (1.0 if same else 0.75), result
    assert result.max_logit_delta <= bound, (
        f"{fmt}: teacher-forced, max |dlogit| {result.max_logit_delta:.3g} > {bound}"
    )
