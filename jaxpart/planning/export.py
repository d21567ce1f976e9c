"""A plan as the settings a serving engine takes: vLLM, SGLang and TensorRT-LLM run pipeline
stages with uneven layer counts and leave the split to the user. No jax.

Each engine's syntax and its default split, from its own code:
- vLLM: ``VLLM_PP_LAYER_PARTITION``, read by ``get_pp_indices`` in vllm/distributed/utils.py
  (vllm-project/vllm at 5a6541db9bfa77756459722f69e8c89a0b47a14d): split on ",", each piece
  through ``int()``, as many as ``pp_size``, summing to ``num_hidden_layers``; unset, each
  stage gets L // PP and the leftover layers go one each to the second-to-last stage, then
  towards the first, never the last. Flags from vllm/engine/arg_utils.py
  (99d7eb5d6a512cfcc5a2b104f24ebf2d6cda772b): ``--tensor-parallel-size``,
  ``--pipeline-parallel-size``, ``--data-parallel-size``, ``--gpu-memory-utilization``.
- SGLang: ``SGLANG_PP_LAYER_PARTITION``, read by ``get_pp_indices`` in
  python/sglang/srt/distributed/utils.py (sgl-project/sglang at
  1107be112815907371027e0ab2203cb57d91c10e) with the same parsing and checks; unset, the last
  L mod PP stages get one layer more. Flags from python/sglang/srt/server_args.py
  (001067fffe33427bee0ed2f007fb7551a1d76b44): ``--tp-size``, ``--pp-size``, ``--dp-size``
  (whole TP x PP replicas without DP attention), ``--mem-fraction-static``.
- TensorRT-LLM: the LLM API's ``pp_partition: Optional[List[int]]`` (PR NVIDIA/TensorRT-LLM#9003,
  November 2025; checked in ``Mapping.pp_layers``: as many as ``pp_size``, summing to the
  layers), given to ``trtllm-serve`` in the YAML file of ``--extra_llm_api_options``; unset,
  ``torch.tensor_split``: the first L mod PP stages get one layer more. Flags from
  tensorrt_llm/commands/serve.py (4c05a74891e4df8066f08ed4ce14b0972abe4e25): ``--tp_size``,
  ``--pp_size``; no replica flag, so replicas are separate servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxpart.config import ConfigError, MeshConfig
from jaxpart.planning.capacity import Memory
from jaxpart.planning.plan import Plan

EXPORT_ENGINES = ("vllm", "sglang", "trtllm")
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}


def default_split(engine: str, n_layers: int, pp: int) -> list[int]:
    """The layers per stage ``engine`` runs when it is given no partition (see above)."""
    base, extra = divmod(n_layers, pp)
    parts = [base] * pp
    if engine == "vllm":
        for i in range(2, extra + 2):
            parts[-i] += 1
    elif engine == "sglang":
        for i in range(pp - extra, pp):
            parts[i] += 1
    elif engine == "trtllm":
        for i in range(extra):
            parts[i] += 1
    else:
        raise ConfigError(f"--export = {engine!r}: use one of {list(EXPORT_ENGINES)}")
    return parts


@dataclass(frozen=True)
class Export:
    engine: str
    tp: int
    pp: int
    replicas: int
    layers_per_stage: tuple[int, ...]
    default_split: tuple[int, ...]  # what the engine runs without the partition
    commands: tuple[str, ...]  # shell lines, in order
    files: dict[str, str] = field(default_factory=dict)  # name -> contents, written beside
    notes: tuple[str, ...] = ()
    chosen_by: str = ""  # what chose the plan (a prediction's source), printed with it

    def text(self) -> str:
        out = [
            f"# {ENGINE_NAMES[self.engine]}: TP={self.tp} x PP={self.pp}"
            + (f", {self.replicas} replicas" if self.replicas > 1 else "")
            + f", layers per stage {','.join(map(str, self.layers_per_stage))}"
            + (f" ({self.chosen_by})" if self.chosen_by else "")
        ]
        for name, body in self.files.items():
            out.append(f"cat > {name} <<'EOF'\n{body.rstrip()}\nEOF")
        out += list(self.commands)
        out += [f"# {n}" for n in self.notes]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "tp": self.tp,
            "pp": self.pp,
            "replicas": self.replicas,
            "layers_per_stage": list(self.layers_per_stage),
            "engine_default_split": list(self.default_split),
            "commands": list(self.commands),
            "files": dict(self.files),
            "notes": list(self.notes),
            "chosen_by": self.chosen_by,
        }


def _devices(mesh: MeshConfig, first: int, count: int) -> tuple[int, str]:
    """(host, CUDA_VISIBLE_DEVICES) of ``count`` devices from global index ``first``."""
    host = first // mesh.devices_per_host
    local = first % mesh.devices_per_host
    return host, ",".join(str(local + i) for i in range(count))


def export_plan(
    plan: Plan,
    mesh: MeshConfig,
    engine: str,
    memory: Memory,
    model_ref: str = "$MODEL",
    chosen_by: str = "",
) -> Export:
    """``plan`` as ``engine``'s settings, with the memory shares its profile predicts with
    (``memory``: vLLM's and SGLang's share of the device, TensorRT-LLM's share of what the
    weights leave)."""
    if engine not in EXPORT_ENGINES:
        raise ConfigError(f"--export = {engine!r}: use one of {list(EXPORT_ENGINES)}")
    fraction = memory.kv_free_fraction if engine == "trtllm" else memory.memory_fraction
    tp, pp, replicas = plan.split, plan.n_stages, plan.data_parallel
    layers = tuple(plan.layers_per_stage)
    n_layers = sum(layers)
    default = tuple(default_split(engine, n_layers, pp))
    split = ",".join(map(str, layers))
    per_replica = tp * pp
    hosts = -(-per_replica // mesh.devices_per_host)
    notes = []
    if pp > 1 and tuple(layers) == default:
        notes.append(f"the partition is {ENGINE_NAMES[engine]}'s own default split, given anyway")
    if hosts > 1:
        notes.append(
            f"a replica spans {hosts} hosts of {mesh.devices_per_host} devices: start it with "
            f"{ENGINE_NAMES[engine]}'s multi-node launch (the flags above on every host)"
        )
    files: dict[str, str] = {}
    commands: list[str] = []
    # One server per replica, with its devices, where the engine has no replica flag (or, for
    # vLLM, where its data parallelism beside pipeline stages is not confirmed by its code).
    separate = replicas > 1 and (engine == "trtllm" or (engine == "vllm" and pp > 1))
    instances = range(replicas) if separate else range(1)
    for k in instances:
        prefix = ""
        if separate and hosts == 1:
            host, visible = _devices(mesh, k * per_replica, per_replica)
            prefix = f"CUDA_VISIBLE_DEVICES={visible} "
            if mesh.hosts > 1:
                prefix = f"# host {host}:\n{prefix}"
        port = f" --port {8000 + k}" if separate else ""
        if engine == "vllm":
            dp = f" --data-parallel-size {replicas}" if replicas > 1 and not separate else ""
            env = f"VLLM_PP_LAYER_PARTITION={split} " if pp > 1 else ""
            commands.append(
                f"{prefix}{env}vllm serve {model_ref} "
                f"--tensor-parallel-size {tp} --pipeline-parallel-size {pp}{dp} "
                f"--gpu-memory-utilization {fraction:g}{port}"
            )
        elif engine == "sglang":
            dp = f" --dp-size {replicas}" if replicas > 1 else ""
            env = f"SGLANG_PP_LAYER_PARTITION={split} " if pp > 1 else ""
            commands.append(
                f"{prefix}{env}python -m sglang.launch_server "
                f"--model-path {model_ref} --tp-size {tp} --pp-size {pp}{dp} "
                f"--mem-fraction-static {fraction:g}"
            )
        else:
            commands.append(
                f"{prefix}trtllm-serve {model_ref} --tp_size {tp} --pp_size {pp} "
                f"--extra_llm_api_options pp.yaml{port}"
            )
    if engine == "trtllm":
        partition = f"pp_partition: [{', '.join(map(str, layers))}]\n" if pp > 1 else ""
        files["pp.yaml"] = (
            f"{partition}kv_cache_config:\n  free_gpu_memory_fraction: {fraction:g}\n"
        )
    if separate:
        notes.append(
            f"{replicas} servers, one a replica, on ports {8000}-{8000 + replicas - 1}: "
            "balance requests over them"
        )
    return Export(
        engine, tp, pp, replicas, layers, default, tuple(commands), files, tuple(notes), chosen_by
    )
