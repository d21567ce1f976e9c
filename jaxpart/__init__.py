"""jaxpart: place a dense decoder on a device mesh layer-wise or as TP x PP, and compare them.

The Python API follows the data path: config -> planning -> runtime (see the README's layout).

    import jaxpart
    model = jaxpart.load_model("dense16-tiny")
    mesh = jaxpart.load_mesh("cpu16")
    shape = jaxpart.RunShape(batch=16, prompt_len=16, gen_len=8)  # or default_run("dense16-tiny")
    jaxpart.ensure_cpu_devices(mesh.n_devices)     # before jax starts, for a CPU mesh
    plan = jaxpart.make_plan(model, mesh, shape)
    tokens, logits, executor = jaxpart.generate("layerwise", model, mesh, shape)

Config, planning and the performance model need no jax; the names that do are imported on
first use.
"""

from importlib import import_module

from jaxpart.config import (
    ConfigError,
    GenerationConfig,
    MeshConfig,
    ModelConfig,
    RunShape,
    default_run,
    load_mesh,
    load_model,
    parse_size,
)
from jaxpart.perf.search import search_plans
from jaxpart.planning.memory import device_memory, layer_memory
from jaxpart.planning.partition import PlanError, plan_balanced, plan_greedy, plan_manual
from jaxpart.planning.plan import Plan, make_plan

_LAZY = {
    "generate": "jaxpart.runtime.engine",
    "PlanChoice": "jaxpart.planning.placement",
    "KernelChoice": "jaxpart.model.kernels.backend",
    "ReferenceExecutor": "jaxpart.runtime.executors",
    "PipelineExecutor": "jaxpart.runtime.executors",
    "baseline_plan": "jaxpart.planning.baseline",
    "DenseDecoder": "jaxpart.model.decoder",
    "init_params": "jaxpart.model.decoder",
    "build_mesh": "jaxpart.runtime.sharding",
    "ensure_cpu_devices": "jaxpart.runtime.sharding",
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
    "RunShape",
    "default_run",
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
