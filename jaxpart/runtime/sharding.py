"""Plan -> a jax Mesh with axes (data, stage, tensor) and a NamedSharding for every leaf.

An ordered rules table maps the model's logical axes to mesh axes; nothing else knows mesh axis
names. Layer weights go from the canonical ``[L, ...]`` layout to a padded ``[S * Lmax, ...]``
layout whose leading axis splits over ``stage``: stage s holds rows s*Lmax .. s*Lmax + n_s - 1.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxpart.config import ConfigError, ModelConfig
from jaxpart.model.decoder import CACHE_AXES, logical_specs
from jaxpart.planning.plan import Plan

MESH_AXES = ("data", "stage", "tensor")

# Logical axis -> mesh axis, first match wins; an axis not listed is replicated.
# kv_heads: split when the tensor degree divides them; split further, the executor first copies
# each K/V head to the ranks whose query heads share it, so every rank holds exactly the one it
# needs (as Megatron and MaxText do).
RULES: tuple[tuple[str, str | None], ...] = (
    ("layers", "stage"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("batch", "data"),
    ("embed", None),
    ("head_dim", None),
    ("vocab", None),
    ("seq", None),
)


def ensure_cpu_devices(n: int) -> None:
    """Ask XLA for ``n`` simulated CPU devices; must run before jax's backend starts."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return
    jax.config.update("jax_num_cpu_devices", n)


def put_global(x, sharding: NamedSharding) -> jax.Array:
    """A host array -> a global array with ``sharding``. Every process holds the whole host
    array and contributes the shards of its own devices (works for one process too)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a global array on the host of every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def spec_for(axes: tuple[str | None, ...], plan: Plan) -> P:
    """Logical axes -> mesh PartitionSpec; a mesh axis of size 1 in this plan is left out."""
    sizes = dict(zip(MESH_AXES, _mesh_shape(plan), strict=True))
    rules = dict(RULES)
    mesh_axes = (rules.get(a) if a is not None else None for a in axes)
    return P(*(m if m is not None and sizes[m] > 1 else None for m in mesh_axes))


def _mesh_shape(plan: Plan) -> tuple[int, int, int]:
    return plan.data_parallel, plan.n_stages, plan.split


def build_mesh(plan: Plan, devices=None) -> Mesh:
    """Devices in plan order: device r*S*t + s*t + k is replica r, stage s, tensor shard k."""
    # Process by process, so that contiguous ids (a stage's tensor group) share a host.
    devices = sorted(
        jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id)
    )
    if len(devices) < plan.n_devices:
        raise ConfigError(
            f"the plan needs {plan.n_devices} devices ({plan.data_parallel} x {plan.n_stages} "
            f"stages x {plan.split}); jax sees {len(devices)} "
            f"{devices[0].platform if devices else ''} device(s)"
        )
    grid = np.array(devices[: plan.n_devices]).reshape(_mesh_shape(plan))
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def param_specs(cfg: ModelConfig, plan: Plan) -> dict:
    """Mesh PartitionSpec of every parameter (layer leaves in the padded stage layout)."""
    return jax.tree.map(
        lambda spec: spec_for(tuple(spec), plan),
        logical_specs(cfg),
        is_leaf=lambda x: isinstance(x, P),
    )


def kv_copies(cfg: ModelConfig, plan: Plan) -> int:
    """How many tensor ranks share each K/V head: 1 when the split divides the K/V heads,
    else split / n_kv_heads (each head is copied to the ranks whose query heads use it)."""
    return max(1, plan.split // cfg.n_kv_heads)


def cache_spec(plan: Plan) -> P:
    return spec_for(CACHE_AXES, plan)


def stage_layout(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """(rows, sizes): canonical layer id of each padded row ``[S * Lmax]``, and layers per stage.

    Padding rows repeat the stage's last layer; the executor skips them (``n_valid``).
    """
    lmax = max(len(s.layers) for s in plan.stages)
    rows = []
    for stage in plan.stages:
        layers = list(stage.layers)
        rows.extend(layers + [layers[-1]] * (lmax - len(layers)))
    sizes = np.array([len(s.layers) for s in plan.stages], np.int32)
    return np.array(rows, np.int32), sizes


def padding_fraction(plan: Plan) -> float:
    """Share of stage-layer slots that are padding: the idle time shorter stages spend waiting."""
    lmax = max(len(s.layers) for s in plan.stages)
    total = sum(len(s.layers) for s in plan.stages)
    return 1.0 - total / (lmax * len(plan.stages))


def spec_dump_text(cfg: ModelConfig, plan: Plan) -> str:
    """The dump as JSON with one leaf a line, so that a diff names the leaf that changed."""
    items = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in spec_dump(cfg, plan).items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


def spec_dump(cfg: ModelConfig, plan: Plan) -> dict[str, list]:
    """Every leaf's PartitionSpec, as JSON-friendly lists: the golden files diff this."""
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(
        param_specs(cfg, plan), is_leaf=lambda x: isinstance(x, P)
    )[0]
    for path, spec in flat:
        name = "params/" + "/".join(str(getattr(k, "key", k)) for k in path)
        out[name] = [None if a is None else a for a in spec]
    out["cache/k"] = list(cache_spec(plan))
    out["cache/v"] = list(cache_spec(plan))
    rows, sizes = stage_layout(plan)
    out["mesh"] = {
        "axes": list(MESH_AXES),
        "shape": [plan.data_parallel, plan.n_stages, plan.split],
    }
    out["kv_head_copies"] = kv_copies(cfg, plan)
    out["layer_rows"] = rows.tolist()  # canonical layer id of each padded row on the stage axis
    out["layers_per_stage"] = sizes.tolist()
    return out
