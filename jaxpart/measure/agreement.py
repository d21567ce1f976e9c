"""Do the placements compute the reference's model? In float32 they must generate identical
tokens. In a 2-byte dtype, rounding alone makes near-ties go either way, after which free-running
generations part for good; so each placement is *teacher-forced* (fed the reference's tokens)
and judged step by step: where it would choose another token than the reference's, the gap
between its own top logit and its logit at the reference's token must be within what rounding
explains, ``LOGIT_TOLERANCE``.

The tolerance is twice the largest logit error measured for the dtype (``scripts/logit_error.py
--sequences 128 --steps 48``: dense16-tiny, random weights, each placement teacher-forced on the
float32 reference's tokens): bfloat16 0.045 from float32 and 0.038 between two bfloat16
placements; float16 0.0054 and 0.0049. A placement that computes another function (layers in
the wrong order, say) misses by far more: tests/test_compare.py injects one.

FP8 (weights per channel, activations per token, an FP8 KV cache; ``scripts/logit_error.py
--fp8 --sequences 128 --steps 48``, float32 and bfloat16 activations) errs in proportion to the
activations, so its tolerances are in units of each sequence's logit spread (the std of the
reference's first-step logits, ``Forced.spread``): on dense16-tiny a placement's logits are
0.30 spreads at most from the FP8 reference's (each tensor rank quantises its own share of a
row-split layer's input, as vLLM does, so placements differ by more than rounding), and 0.23
at most from the dequantised model's in float32, whose argmax they choose at 91.0% of the steps
or more. The tolerances are twice those: ``RELATIVE_TOLERANCE["float8_e4m3fn"]`` between
placements, ``FP8_DEQUANTIZED_TOLERANCE`` against the dequantised model. gqa-tiny, whose tied
head gives logits 11x as wide, stays within both (0.47 and 0.38 spreads; its argmax is the
dequantised model's at 99.1% of the steps or more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LOGIT_TOLERANCE = {"float32": 0.0, "bfloat16": 0.09, "float16": 0.011}
# in units of each sequence's logit spread (Forced.spread)
RELATIVE_TOLERANCE = {"float8_e4m3fn": 0.60}
FP8_DEQUANTIZED_TOLERANCE = 0.46


@dataclass(frozen=True)
class Agreement:
    method: str
    dtype: str
    agreement: float  # share of (sequence, step) at which it chooses the reference's token
    max_logit_delta: float  # largest |its logit - the reference's| at the reference's token
    faults: int  # choices that differ by more than the tolerance
    worst_gap: float  # largest gap at a differing choice (0 if none)
    tolerance: float
    relative: bool = False  # the tolerance is in units of each sequence's logit spread

    @property
    def ok(self) -> bool:
        return self.faults == 0

    def to_dict(self) -> dict:
        return asdict(self)


def agree(method: str, dtype: str, reference, forced, tolerance: float | None = None) -> Agreement:
    """Judge a teacher-forced run (``forced``, an ``executors.Forced``) against the reference's
    own teacher-forced run on the same tokens (``reference``), within ``dtype``'s tolerance:
    absolute (``LOGIT_TOLERANCE``), or for FP8 in units of each sequence's logit spread
    (``RELATIVE_TOLERANCE``; ``tolerance`` where given, as ``FP8_DEQUANTIZED_TOLERANCE``
    against a dequantised model). The gaps and deltas reported are in the same units."""
    relative = dtype in RELATIVE_TOLERANCE
    if tolerance is None:
        tolerance = RELATIVE_TOLERANCE[dtype] if relative else LOGIT_TOLERANCE[dtype]
    unit = reference.spread[:, None] if relative else 1.0
    expected = reference.tokens  # fed its own greedy tokens, the reference chooses them again
    differs = forced.tokens != expected
    gaps = np.where(differs, forced.top_logit - forced.given_logit, 0.0) / unit
    delta = np.abs(forced.given_logit - reference.given_logit) / unit
    return Agreement(
        method=method,
        dtype=dtype,
        agreement=float(1.0 - differs.mean()),
        max_logit_delta=float(delta.max()),
        faults=int((gaps > tolerance).sum()),
        worst_gap=float(gaps.max()),
        tolerance=tolerance,
        relative=relative,
    )
