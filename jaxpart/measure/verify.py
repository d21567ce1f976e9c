"""`jaxpart verify`: the full-size sharded programs from abstract arrays (no weights are
allocated). On a GPU mesh, the programs a GPU run would run (the kernels ``auto`` picks there)
are lowered for CUDA, and their largest intermediate buffer is read from the lowered module.
XLA's per-device memory comes from compiling them on simulated CPU devices (with the XLA kernel
paths: a CUDA program cannot be compiled without a GPU), set beside the memory model's
prediction and the mesh's HBM."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from jaxpart.config import Backend, Dtype, MeshConfig, Method, ModelConfig, RunShape
from jaxpart.model.kernels.backend import KernelChoice
from jaxpart.planning.memory import (
    KV_BLOCK,
    DeviceMemory,
    check_pod,
    device_memory,
    kv_bytes,
    layer_weight_bytes,
)
from jaxpart.planning.placement import PlanChoice, plan_for, resolved
from jaxpart.planning.plan import Plan
from jaxpart.runtime.executors import PipelineExecutor

_TENSOR = re.compile(r"tensor<((?:\d+x)+)([a-zA-Z][a-zA-Z0-9]*)>")
_ELEMENT_BYTES = {"f64": 8, "i64": 8, "f32": 4, "i32": 4, "ui32": 4, "bf16": 2, "f16": 2}
_ELEMENT_BYTES |= {"i16": 2, "ui16": 2, "i8": 1, "ui8": 1, "i1": 1, "f8E4M3FN": 1}


def _tensor_bytes(dims: str, element: str) -> int:
    count = 1
    for d in dims.rstrip("x").split("x"):
        count *= int(d)
    return count * _ELEMENT_BYTES.get(element, 4)


def _per_device_text(module_text: str) -> tuple[str, set[tuple[str, str]]]:
    """The part of a lowered module with per-device shapes, and the types of what it is given:
    a shard_map program's body (its ``sdy.manual_computation`` region) and the private
    functions it calls, or, with no shard_map, the whole module after its signature."""
    at = module_text.find("sdy.manual_computation(")
    if at < 0:
        main = module_text.find("func.func public @main")
        end = module_text.find("->", main)
        return module_text[end:], set(_TENSOR.findall(module_text[main:end]))
    start = module_text.index("{\n", at)
    given = set(_TENSOR.findall(module_text[module_text.index("manual_axes", at) : start]))
    depth, i = 0, start
    while True:
        c = module_text[i]
        depth += (c == "{") - (c == "}")
        i += 1
        if depth == 0:
            break
    privates = module_text.find("func.func private")
    return module_text[start:i] + (module_text[privates:] if privates >= 0 else ""), given


def largest_intermediate(module_text: str, exclude: set[str] = frozenset()) -> tuple[int, str]:
    """(bytes, type) of the largest tensor, per device, that a lowered (StableHLO) module makes:
    not its arguments, nor the types in ``exclude`` (such as ``"8x64x16xf32"``: the caches made
    by the prefill, which are the program's state, not a buffer it needs on top)."""
    text, given = _per_device_text(module_text)
    exclude = set(exclude) | {f"{dims}{element}" for dims, element in given}
    # A reshape of an excluded tensor (same element type and count) is a view of it, not a
    # buffer: the decode kernel's page pool is the cache seen as pages.
    views = {
        (_tensor_bytes(*_TENSOR.match(f"tensor<{k}>").groups()), k.rsplit("x", 1)[1])
        for k in exclude
    }
    best = (0, "")
    for dims, element in sorted(set(_TENSOR.findall(text))):  # ties: the same one every run
        kind = f"{dims}{element}"
        size = _tensor_bytes(dims, element)
        if kind in exclude or (size, element) in views:
            continue
        if size > best[0]:
            best = (size, kind)
    return best


def local_type(shape, dtype, mesh_shape: dict, spec) -> str:
    """A global array's per-device type in the lowered module's spelling."""
    import numpy as np

    dims = list(shape)
    for i, axis in enumerate(spec):
        if axis is not None:
            dims[i] //= mesh_shape[axis]
    names = {Dtype.FLOAT32: "f32", Dtype.BFLOAT16: "bf16", Dtype.FLOAT16: "f16"}
    names[Dtype.FLOAT8_E4M3FN] = "f8E4M3FN"
    names["uint8"] = "ui8"  # an FP8 KV cache's bytes (model.quant.FP8_CACHE)
    element = names[np.dtype(dtype).name]
    return "x".join(map(str, dims)) + "x" + element


def gpu_kernels(mesh: MeshConfig) -> KernelChoice:
    """The kernels ``auto`` picks on the mesh's GPUs, for lowering on any machine."""
    smem = mesh.tiers["smem"]
    return KernelChoice(
        sram_bytes=smem.capacity_bytes, sm_count=smem.sm_count, interpret=False, platform="gpu"
    )


@dataclass(frozen=True)
class CudaLowering:
    """One program lowered for CUDA: its Pallas (Triton) kernel calls and the largest buffer
    it makes per device (type in the lowered module's spelling)."""

    pallas_kernels: int
    largest_intermediate_bytes: int
    largest_intermediate: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProgramMemory:
    """XLA's memory analysis of one compiled program, per device."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs written in place of arguments (the caches)
    temp_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def state_bytes(self) -> int:
        """Arguments and outputs, aliased ones once: for the decode step, the state a run keeps
        (weights, embedding and head, and the caches)."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes

    def to_dict(self) -> dict:
        return asdict(self) | {"peak_bytes": self.peak_bytes}


@dataclass(frozen=True)
class CostCheck:
    """One decode step on one device: XLA's cost analysis beside the perf model's figures."""

    xla_flops: float
    model_flops: float
    attended_positions: int
    xla_bytes_accessed: float
    model_bytes: int  # the least the step must move

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """A method's programs for one run, compiled from abstract arrays, beside the memory model:
    its bytes per device on the mesh (with the kernels a run there uses) and for the CPU
    compile, XLA's memory analysis of each program, and on a GPU mesh each program lowered for
    CUDA."""

    model: str
    mesh: str
    method: Method
    shape: RunShape  # microbatches settled
    plan: Plan
    on_mesh: DeviceMemory  # the memory model on the mesh's devices
    on_cpu: DeviceMemory  # the memory model as the CPU compile runs
    hbm_bytes: int
    programs: dict[str, ProgramMemory]  # decode, prefill
    cuda: dict[str, CudaLowering] | None  # None: not a GPU mesh
    cost_check: CostCheck | None = None

    def cpu_compile_parts(self) -> dict[str, int]:
        """What the compiled programs hold by the memory model: its parts without the model
        file's buffers (a framework's workspace estimate, which XLA's programs do not
        allocate)."""
        return {k: v for k, v in self.on_cpu.parts().items() if k != "buffers"}

    @property
    def cpu_compile_bytes(self) -> int:
        return self.on_cpu.total - self.on_cpu.buffers

    @property
    def xla_peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.programs.values())

    @property
    def predicted_over_xla_peak(self) -> float:
        return self.cpu_compile_bytes / self.xla_peak_bytes

    @property
    def state_bytes(self) -> int:
        return self.programs["decode"].state_bytes

    @property
    def predicted_state_over_xla(self) -> float:
        """The memory model's weights, embedding and head and KV cache over XLA's decode
        arguments and outputs."""
        cpu = self.on_cpu
        return (cpu.weights + cpu.kv_cache + cpu.embedding_and_head) / self.state_bytes

    @property
    def fits_hbm(self) -> bool:
        return self.on_mesh.total <= self.hbm_bytes and self.xla_peak_bytes <= self.hbm_bytes

    def to_dict(self) -> dict:
        out = {
            "model": self.model,
            "mesh": self.mesh,
            "method": self.method,
            "batch": self.shape.batch,
            "prompt_len": self.shape.prompt_len,
            "gen_len": self.shape.gen_len,
            "microbatches": self.shape.microbatches,
            "plan": self.plan.to_dict(),
            "predicted_per_device": {**self.on_mesh.parts(), "total": self.on_mesh.total},
            "predicted_for_cpu_compile": {
                **self.cpu_compile_parts(),
                "total": self.cpu_compile_bytes,
            },
            "xla_peak_bytes": self.xla_peak_bytes,
            "predicted_over_xla_peak": self.predicted_over_xla_peak,
            "state_bytes": self.state_bytes,
            "predicted_state_over_xla": self.predicted_state_over_xla,
            "fits_hbm": self.fits_hbm,
            "hbm_bytes": self.hbm_bytes,
            "programs": {k: p.to_dict() for k, p in self.programs.items()},
            "cuda": None if self.cuda is None else {k: v.to_dict() for k, v in self.cuda.items()},
        }
        if self.cost_check is not None:
            out["cost_check"] = self.cost_check.to_dict()
        return out


def lower_for_cuda(executor: PipelineExecutor) -> dict[str, CudaLowering]:
    """Each program lowered for CUDA: its Pallas kernels and the largest buffer it makes per
    device, the KV caches (the program's state) left out."""
    cache = executor.abstract_inputs()["cache"]
    state = {local_type(cache.shape, cache.dtype, executor.mesh.shape, cache.sharding.spec)}
    out = {}
    for name in ("decode", "prefill"):
        program, args = executor.program(name)
        text = program.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
        size, kind = largest_intermediate(text, state)
        out[name] = CudaLowering(
            pallas_kernels=text.count("__gpu$xla.gpu.triton"),
            largest_intermediate_bytes=size,
            largest_intermediate=kind,
        )
    return out


def predicted_memory(cfg: ModelConfig, executor: PipelineExecutor, platform: str) -> DeviceMemory:
    """The memory model's bytes for the executor's largest stage, per device: on ``"gpu"``
    with the kernels a GPU run uses (flash attention in prefill); on ``"cpu"`` as the CPU
    compile runs it (XLA attention, and the f32 copies XLA's CPU backend makes)."""
    plan, shape = executor.plan, executor.shape
    per_replica = shape.batch // plan.data_parallel
    return device_memory(
        cfg,
        executor.lmax,
        plan.split,
        cache_rows=per_replica,
        rows=per_replica // shape.microbatches,
        prompt_len=shape.prompt_len,
        attention=Backend.auto_on(platform),
        platform=platform,
    )


def verify(
    cfg: ModelConfig,
    mesh: MeshConfig,
    method: Method,
    choice: PlanChoice,
    shape: RunShape,
    *,
    progress=None,
) -> Verification:
    """``method``'s programs for a run of ``shape`` compiled from abstract arrays, beside the
    memory model; a run too large for the pod is refused first (``memory.check_pod``)."""
    shape.check(cfg)
    check_pod(cfg, mesh, shape)
    plan = plan_for(method, cfg, mesh, shape, choice)
    shape = resolved(method, plan, shape, choice)
    executor = PipelineExecutor(cfg, plan, shape)
    cuda = None
    if mesh.platform == "gpu":
        if progress:
            progress("the GPU programs for CUDA")
        cuda = lower_for_cuda(PipelineExecutor(cfg, plan, shape, kernel=gpu_kernels(mesh)))
    programs = {}
    for program in ("decode", "prefill"):
        if progress:
            progress(program)
        stats = executor.compiled(program).memory_analysis()
        programs[program] = ProgramMemory(
            argument_bytes=stats.argument_size_in_bytes,
            output_bytes=stats.output_size_in_bytes,
            alias_bytes=stats.alias_size_in_bytes,
            temp_bytes=stats.temp_size_in_bytes,
        )
    return Verification(
        model=cfg.name,
        mesh=mesh.name,
        method=method,
        shape=shape,
        plan=plan,
        on_mesh=predicted_memory(cfg, executor, mesh.platform),
        on_cpu=predicted_memory(cfg, executor, "cpu"),
        hbm_bytes=mesh.tiers["hbm"].capacity_bytes,
        programs=programs,
        cuda=cuda,
    )


def cost_check(cfg: ModelConfig, batch: int) -> CostCheck:
    """The perf model's FLOPs and bytes for one decode step on one device, beside XLA's own
    cost analysis of that step (compiled from abstract arrays, layers unrolled: XLA counts a
    loop body once). The attention's loop over KV blocks is counted once too, so both sides
    attend over one block. In float32: XLA's CPU cost analysis also counts the ops that emulate
    bf16 arithmetic (3.4x the FLOPs for dense16-tiny in bf16), which a GPU does not run. An FP8
    model is counted dequantised: its GEMMs have the same FLOPs, and XLA's CPU analysis would
    count the ops that emulate FP8 arithmetic (3.2x for llama3.1-70b-fp8)."""
    cfg = cfg.dequantized().with_dtype("float32")
    import jax
    import jax.numpy as jnp

    from jaxpart.model.decoder import abstract_params, empty_cache
    from jaxpart.model.layers import arch_of, forward
    from jaxpart.model.quant import cache_dtype
    from jaxpart.perf.predict import decode_step_flops

    params = abstract_params(cfg)
    k, v = jax.eval_shape(lambda: empty_cache(cfg, batch, cache_dtype(cfg.kv_dtype)))
    token = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    arch = arch_of(cfg)
    step = jax.jit(lambda p, t, k, v: forward(p, t, k, v, 0, unroll=True, arch=arch))
    cost = step.lower(params, token, k, v).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # The least such a step must move: every weight, the KV block attended over, the embedding
    # row and the LM head.
    attended = min(KV_BLOCK, k.shape[3])
    kv = cfg.n_layers * kv_bytes(cfg, batch, attended)
    minimum = (
        cfg.n_layers * layer_weight_bytes(cfg) + kv + cfg.d_model * cfg.vocab * cfg.embed_bytes_each
    )
    return CostCheck(
        xla_flops=float(cost["flops"]),
        model_flops=decode_step_flops(cfg, batch, attended),
        attended_positions=attended,
        xla_bytes_accessed=float(cost["bytes accessed"]),
        model_bytes=minimum,
    )
