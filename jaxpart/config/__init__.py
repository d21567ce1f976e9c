"""Configs as data, no jax: the model (architecture and maximum context), the mesh (hardware and
timing), the run shape, generation settings, the closed sets of names an option takes
(``kinds``: methods, strategies, fit definitions, backends, dtypes), sizes and the one error
type for bad input.

A name such as ``dense16`` resolves to the shipped ``models/dense16.toml`` (or ``meshes/...``)
from any working directory; a path works too."""

from jaxpart.config.errors import ConfigError
from jaxpart.config.files import resolve, shipped
from jaxpart.config.generation import GenerationConfig
from jaxpart.config.kinds import (
    DTYPE_BYTES,
    PLACEMENTS,
    RUN_DTYPES,
    Backend,
    Dtype,
    FitDefinition,
    Method,
    Strategy,
)
from jaxpart.config.mesh import TIER_NAMES, Link, MeshConfig, Tier, Timing, load_mesh
from jaxpart.config.model import (
    MLP_KINDS,
    ModelConfig,
    StatedFigures,
    default_run,
    load_hf_model,
    load_model,
    load_model_file,
)
from jaxpart.config.shape import RunShape, serving_default
from jaxpart.config.units import format_bytes, parse_size

__all__ = [
    "DTYPE_BYTES",
    "MLP_KINDS",
    "PLACEMENTS",
    "RUN_DTYPES",
    "TIER_NAMES",
    "Backend",
    "ConfigError",
    "Dtype",
    "FitDefinition",
    "GenerationConfig",
    "Link",
    "MeshConfig",
    "Method",
    "ModelConfig",
    "RunShape",
    "StatedFigures",
    "Strategy",
    "Tier",
    "Timing",
    "default_run",
    "format_bytes",
    "load_hf_model",
    "load_mesh",
    "load_model",
    "load_model_file",
    "parse_size",
    "resolve",
    "serving_default",
    "shipped",
]
