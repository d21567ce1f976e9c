"""Flags to objects, once per command: the model (in --dtype), the run shape (flags over the
model file's [run] table, checked once), the mesh, the plan and kernel choices, and the rules
that refuse flags another flag would ignore."""

from __future__ import annotations

from jaxpart.cli.parser import defaults_of
from jaxpart.config import ConfigError, MeshConfig, ModelConfig, RunShape, load_mesh
from jaxpart.config.model import load_model_file
from jaxpart.planning.placement import PlanChoice


def model_and_default(args) -> tuple[ModelConfig, RunShape]:
    """The model --model names (in --dtype, with --quantize and --kv-dtype where they are
    given) and its file's default shape."""
    model, default = load_model_file(args.model)
    dtype = getattr(args, "dtype", None)
    if dtype:
        model = model.with_dtype(dtype)
    if getattr(args, "quantize", None) == "fp8":
        if model.fp8:
            raise ConfigError(
                f"--quantize = 'fp8': {model.name} already has FP8 weights "
                f"({model.quant.describe()})"
            )
        model = model.quantized()
    kv = getattr(args, "kv_dtype", None)
    if kv:
        model = model.replace(kv_dtype=kv)
    return model, default


def run_shape(
    args,
    model: ModelConfig,
    default: RunShape,
    *,
    batch: int | None = None,
    prompt_len: int | None = None,
    gen_len: int | None = None,
) -> RunShape:
    """The run shape: each of batch, prompt and generation lengths from the keyword (what given
    prompts or a task fix), else the flag, else the model file's [run] table; microbatches from
    the flag, else the file's. Checked against the model's context, here and only here."""

    def pick(name: str, given: int | None) -> int:
        return given or getattr(args, name, None) or getattr(default, name)

    shape = RunShape(
        batch=pick("batch", batch),
        prompt_len=pick("prompt_len", prompt_len),
        gen_len=pick("gen_len", gen_len),
        microbatches=getattr(args, "microbatches", None) or default.microbatches,
    )
    return shape.check(model)


def model_and_shape(args) -> tuple[ModelConfig, RunShape]:
    """The model and the run shape its flags give (for commands without prompts)."""
    model, default = model_and_default(args)
    return model, run_shape(args, model, default)


def plan_choice(args, mesh: MeshConfig) -> PlanChoice:
    """How to place the model, from --capacity --strategy --layers-per-stage --tp --pp."""
    tp, pp = baseline_split(args, mesh)
    return PlanChoice(
        capacity=args.capacity,
        strategy=args.strategy,
        layers_per_stage=tuple(args.layers_per_stage) if args.layers_per_stage else None,
        tp=tp,
        pp=pp,
    )


def baseline_split(args, mesh: MeshConfig) -> tuple[int, int]:
    """The baseline's --tp and --pp; by default the seed's TP=8 x PP=2 where the mesh has the
    devices for it, else tensor parallelism over one host (at most 8) and as many of the two
    pipeline stages as the rest allows: TP=8 x PP=1 on one host of 8."""
    from jaxpart.planning.baseline import DEFAULT_PP, DEFAULT_TP

    tp = args.tp or min(DEFAULT_TP, mesh.devices_per_host, mesh.n_devices)
    pp = args.pp or max(1, min(DEFAULT_PP, mesh.n_devices // tp))
    return tp, pp


def kernel_choice(args, mesh: MeshConfig):
    """The kernel backends, with tiles sized to what one block may hold on chip (the mesh's smem
    tier) and spread over its SMs."""
    from jaxpart.model.kernels.backend import KernelChoice

    smem = mesh.tiers["smem"]
    return KernelChoice(
        mlp=args.mlp_kernel,
        attention=args.attention,
        sram_bytes=smem.capacity_bytes,
        sm_count=smem.sm_count,
        strict=args.strict,
    )


def check_tp_pp(args, model: ModelConfig, mesh: MeshConfig) -> None:
    """A --tp / --pp that cannot split the model is refused before any work (planning the
    baseline would refuse it too, later)."""
    from jaxpart.planning.baseline import check_shape

    check_shape(model, *baseline_split(args, mesh), mesh.n_devices)


def refuse_beside(args, flag: str, why: str, names: tuple[str, ...]) -> None:
    """Flags that ``flag`` would ignore are refused by name, not silently dropped: any of
    ``names`` given a value other than its default."""
    defaults = defaults_of(args.command)
    for name in names:
        value = getattr(args, name)
        if value != defaults[name]:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise ConfigError(
                f"--{name.replace('_', '-')} = {shown} and {flag}: {why}; give one of them"
            )


def start_devices(args, mesh: MeshConfig, console) -> None:
    """Before jax starts: join the other processes of a multi-host run, and give a CPU mesh its
    simulated devices (users never type XLA flags). Only process 0 prints."""
    from jaxpart.runtime.distributed import Distributed, initialize, is_primary

    setup = Distributed(
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        timeout_s=args.init_timeout,
    )
    initialize(setup, mesh)
    if not is_primary():
        console.quiet = True


def _check_weights(args, model: ModelConfig) -> None:
    """A Hugging Face folder runs its own weights: a folder without safetensors is an error
    unless --random-weights (or --checkpoint) says what to run instead."""
    from jaxpart.io.weights import weights_file

    folder = model.hf_folder
    if folder is None or getattr(args, "checkpoint", None):
        return
    if weights_file(folder) is None and not getattr(args, "random_weights", False):
        raise ConfigError(
            f"--model = '{folder}': no model.safetensors or model.safetensors.index.json there; "
            "--random-weights runs random weights instead"
        )


def run_inputs(args, console):
    """What generate and compare run: the model (in --dtype), the mesh with its devices
    started, the prompts (``cli.prompts``), the run shape they and the flags give (given prompts
    or a task fix the batch, the prompt length or the output length), and the plan and kernel
    choices."""
    from jaxpart.cli.prompts import resolve_prompts

    model, default = model_and_default(args)
    _check_weights(args, model)
    mesh = load_mesh(args.mesh)
    start_devices(args, mesh, console)
    choice, kernel = plan_choice(args, mesh), kernel_choice(args, mesh)
    prompts = resolve_prompts(args, model, default)
    shape = run_shape(
        args,
        model,
        default,
        batch=prompts.batch,
        prompt_len=prompts.prompt_len,
        gen_len=prompts.gen_len,
    )
    # sizes before any loop: a run the pod cannot hold is refused by the memory model at once
    # (the one-device reference by one device's HBM)
    from jaxpart.planning.memory import check_pod

    check_pod(model, mesh, shape, 1 if getattr(args, "method", None) == "reference" else None)
    return model, mesh, shape, prompts, choice, kernel
