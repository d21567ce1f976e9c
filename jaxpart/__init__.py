"""jaxpart: place a dense decoder on a device mesh layer-wise or as TP x PP, and compare them.

The Python API follows the data path: config -> memory -> plan.

    import jaxpart
    model = jaxpart.load_model("dense16-tiny")
    mesh = jaxpart.load_mesh("cpu16")
    plan = jaxpart.make_plan(model, mesh, capacity="l2")
"""

from jaxpart.config import ConfigError, MeshConfig, ModelConfig, load_mesh, load_model, parse_size
from jaxpart.memory import layer_memory
from jaxpart.partition import Plan, PlanError, make_plan, plan_balanced, plan_greedy, plan_manual

__all__ = [
    "ConfigError",
    "MeshConfig",
    "ModelConfig",
    "Plan",
    "PlanError",
    "layer_memory",
    "load_mesh",
    "load_model",
    "make_plan",
    "parse_size",
    "plan_balanced",
    "plan_greedy",
    "plan_manual",
]
