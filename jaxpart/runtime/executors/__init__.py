"""The executors: the pipeline (every plan: layer-wise and the TP x PP baseline) and the
single-device reference, with what they share."""

from jaxpart.runtime.executors.base import Executor, Forced, Generation, check_tokens
from jaxpart.runtime.executors.pipeline import PipelineExecutor
from jaxpart.runtime.executors.reference import ReferenceExecutor

__all__ = [
    "Executor",
    "Forced",
    "Generation",
    "PipelineExecutor",
    "ReferenceExecutor",
    "check_tokens",
]
