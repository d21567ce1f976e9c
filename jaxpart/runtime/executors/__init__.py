"""The executors: the pipeline (every plan: layer-wise and the TP x PP baseline) and the
single-device reference, behind one interface (``place``, ``prefill -> DecodeState``,
``decode(state, n)``), with what they share."""

from jaxpart.runtime.executors.base import (
    DecodeState,
    Executor,
    Forced,
    Generation,
    check_tokens,
)
from jaxpart.runtime.executors.pipeline import PipelineExecutor
from jaxpart.runtime.executors.reference import ReferenceExecutor

__all__ = [
    "DecodeState",
    "Executor",
    "Forced",
    "Generation",
    "PipelineExecutor",
    "ReferenceExecutor",
    "check_tokens",
]
