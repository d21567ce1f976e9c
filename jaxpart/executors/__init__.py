"""The executors: the pipeline (every plan: layer-wise and the TP x PP baseline) and the
single-device reference, with what they share."""

from jaxpart.executors.base import Executor, Forced, Generation, RunShape, check_tokens
from jaxpart.executors.pipeline import PipelineExecutor
from jaxpart.executors.reference import ReferenceExecutor

__all__ = [
    "Executor",
    "Forced",
    "Generation",
    "PipelineExecutor",
    "ReferenceExecutor",
    "RunShape",
    "check_tokens",
]
