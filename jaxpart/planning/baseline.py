"""The TP x PP baseline: Megatron-style tensor parallelism inside each stage (heads and MLP width
split over ``tensor``, column then row split, one psum after attention and one after the MLP),
contiguous pipeline stages over ``stage``: equal when PP divides the layers, else the first
L mod PP stages hold one layer more (44 layers over PP3: 15, 15, 14), as Megatron-style engines
run them. It is a Plan like any other, so the same pipeline executor runs it with the same
schedule as the layer-wise plans.
"""

from __future__ import annotations

from jaxpart.config import ConfigError, FitDefinition, MeshConfig, Method, ModelConfig, RunShape
from jaxpart.planning.memory import layer_fit_bytes
from jaxpart.planning.plan import Plan, assemble_plan, device_overhead, microbatch_rows

DEFAULT_TP, DEFAULT_PP = 8, 2  # the seed's baseline: TP=8 x PP=2


def baseline_plan(
    model: ModelConfig,
    mesh: MeshConfig,
    shape: RunShape,
    tp: int = DEFAULT_TP,
    pp: int = DEFAULT_PP,
    devices: int | None = None,
    sizes: list[int] | None = None,
) -> Plan:
    """TP=tp x PP=pp, replicated for data parallelism over the rest of the devices; ``sizes``:
    the layers of each stage (default: as equal as they can be, ``stage_sizes``)."""
    n_devices = mesh.n_devices if devices is None else devices
    check_shape(model, tp, pp, n_devices)
    if sizes is None:
        sizes = stage_sizes(model.n_layers, pp)
    elif len(sizes) != pp or sum(sizes) != model.n_layers or min(sizes) < 1:
        raise ConfigError(
            f"layers per stage = {sizes}: must be {pp} counts >= 1 that sum to the model's "
            f"{model.n_layers} layers"
        )
    ends = [sum(sizes[: i + 1]) for i in range(pp)]
    stages = [list(range(end - n, end)) for end, n in zip(ends, sizes, strict=True)]
    replicas = n_devices // (tp * pp)
    rows = microbatch_rows(shape, replicas, pp)
    per_stage = f"{sizes[0]}" if len(set(sizes)) == 1 else "-".join(map(str, sizes))
    notes = [
        f"baseline TP={tp} x PP={pp}: heads and MLP split {tp} ways, {per_stage} layers a stage"
    ]
    if replicas > 1:
        notes.append(f"TP x PP uses {tp * pp} of {n_devices} devices: replicated {replicas}x")
    return assemble_plan(
        model,
        mesh,
        shape,
        stages,
        split=tp,
        data_parallel=replicas,
        strategy=Method.BASELINE,
        figures="derived",
        definition=FitDefinition.EVERYTHING,
        label="hbm",
        cap=mesh.tiers["hbm"].capacity_bytes,
        layer_bytes=[layer_fit_bytes(model, shape, FitDefinition.EVERYTHING, tp)] * model.n_layers,
        notes=notes,
        overhead=device_overhead(model, mesh, shape, tp, rows),
    )


def stage_sizes(n_layers: int, pp: int) -> list[int]:
    """Layers per stage: as equal as they can be, the larger stages first."""
    base, extra = divmod(n_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def check_shape(model: ModelConfig, tp: int, pp: int, n_devices: int) -> None:
    """TP must split the model's heads and MLP evenly, PP may not outnumber the layers, and
    TP x PP must divide the devices: a one-line error naming the flag otherwise."""
    for flag, value in (("--tp", tp), ("--pp", pp)):
        if value < 1:
            raise ConfigError(f"{flag} = {value}: must be >= 1")
    if model.n_heads % tp:
        raise ConfigError(f"--tp = {tp}: must divide the model's {model.n_heads} attention heads")
    if model.d_ff % tp:
        raise ConfigError(f"--tp = {tp}: must divide the model's MLP width d_ff = {model.d_ff}")
    if model.n_kv_heads % tp and tp % model.n_kv_heads:
        raise ConfigError(
            f"--tp = {tp}: must divide the model's {model.n_kv_heads} K/V heads or be a "
            "multiple of them"
        )
    if pp > model.n_layers:
        raise ConfigError(
            f"--pp = {pp}: more pipeline stages than the model's {model.n_layers} layers"
        )
    if n_devices % (tp * pp):
        raise ConfigError(
            f"--tp x --pp = {tp} x {pp} = {tp * pp}: must divide the {n_devices} devices"
        )
