"""jaxpart: place a dense decoder on a device mesh layer-wise or as TP x PP, and compare them.

The Python API follows the data path: config -> memory -> plan -> sharding -> executor.

    import jaxpart
    model = jaxpart.load_model("dense16-tiny")
    mesh = jaxpart.load_mesh("cpu16")
    jaxpart.ensure_cpu_devices(mesh.n_devices)     # before jax starts, for a CPU mesh
    plan = jaxpart.make_plan(model, mesh)
    tokens, logits, executor = jaxpart.generate("layerwise", model, mesh, gen_len=8)

Planning needs no jax; the names that do are imported on first use.
"""

from importlib import import_module

from jaxpart.config import ConfigError, MeshConfig, ModelConfig, load_mesh, load_model, parse_size
from jaxpart.generation import GenerationConfig
from jaxpart.memory import device_memory, layer_memory
from jaxpart.partition import PlanError, plan_balanced, plan_greedy, plan_manual
from jaxpart.plan import Plan, make_plan
from jaxpart.search import search_plans

_LAZY = {
    "generate": "jaxpart.engine",
    "PlanChoice": "jaxpart.placement",
    "KernelChoice": "jaxpart.kernels.backend",
    "ReferenceExecutor": "jaxpart.executors",
    "PipelineExecutor": "jaxpart.executors",
    "RunShape": "jaxpart.executors",
    "baseline_plan": "jaxpart.baseline",
    "DenseDecoder": "jaxpart.model",
    "init_params": "jaxpart.model",
    "build_mesh": "jaxpart.sharding",
    "ensure_cpu_devices": "jaxpart.sharding",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxpart' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "GenerationConfig",
    "MeshConfig",
    "ModelConfig",
    "Plan",
    "PlanError",
    "device_memory",
    "layer_memory",
    "load_mesh",
    "load_model",
    "make_plan",
    "parse_size",
    "plan_balanced",
    "plan_greedy",
    "plan_manual",
    "search_plans",
    *_LAZY,
]
