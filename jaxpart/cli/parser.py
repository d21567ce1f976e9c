"""The `jaxpart` parser: every subcommand, its options (in argument groups), their types and
defaults. A usage error is one line (``UsageError``), never argparse's exit."""

from __future__ import annotations

import argparse

from jaxpart.config import PLACEMENTS, RUN_DTYPES, Backend, ConfigError, Method, Strategy
from jaxpart.perf.engines import engines
from jaxpart.perf.search import OBJECTIVES
from jaxpart.planning.baseline import DEFAULT_PP, DEFAULT_TP
from jaxpart.planning.export import EXPORT_ENGINES
from jaxpart.train.tasks import TASKS


class UsageError(ConfigError):
    pass


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every option's default (where it has one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2; help shows the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 2^32)")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be > 0")
    return value


def output_file(text: str) -> str:
    """A file the run will write at its end: checked now, before any work."""
    import os
    import stat
    from pathlib import Path

    path = Path(text)
    try:
        if not text or path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: is a directory, not a file")
        mode = os.stat(path).st_mode if os.path.lexists(path) else None
    except OSError as e:  # a symlink loop, a name longer than the file system allows
        shown = text if len(text) <= 80 else text[:60] + "..."
        raise argparse.ArgumentTypeError(f"{shown!r}: {e.strerror}") from None
    special = str(path.absolute()).startswith(("/dev/", "/proc/"))
    if mode is not None and (special or not stat.S_ISREG(mode)):  # /dev/stdout, a pipe
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r}: cannot be written (permissions)")
        return text
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: its folder {str(parent)!r} {what}")
    longest = os.pathconf(parent, "PC_NAME_MAX") - len(".tmp") - 12  # the staged copy's name
    if len(path.name.encode()) > longest:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}...: its name is {len(path.name.encode())} bytes, longer than this "
            f"file system allows ({longest} for an output, beside its staged copy)"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot be written (permissions)")
    return text


def png_file(text: str) -> str:
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"{text!r}: the plot is a PNG; give a name ending .png")
    return output_file(text)


def checkpoint_folder(text: str) -> str:
    """A checkpoint folder to write (or resume): a folder, or a new name in one."""
    from pathlib import Path

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: is a file, not a checkpoint folder")
    parent = path.parent
    if not path.exists() and not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: its folder {str(parent)!r} {what}")
    return text


def existing_folder(text: str) -> str:
    """A checkpoint folder to read."""
    from pathlib import Path

    path = Path(text)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: {what}")
    return text


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected integers separated by commas, e.g. 3,5,4,4"
        ) from None


# One rule for --model and --mesh on every command: where the model runs on this machine
# (compare, generate, train) the default is the seed's model at CPU size, dense16-tiny on cpu16;
# where it is only planned, predicted or compiled abstractly (plan, simulate, verify), the seed's
# own dense16 on h100x16.
RUN_DEFAULTS = ("dense16-tiny", "cpu16")
PREDICT_DEFAULTS = ("dense16", "h100x16")
MODEL_HELP = (
    "a shipped model's name (e.g. dense16, dense16-tiny, gqa-tiny, llama3.1-70b), a TOML path, or "
    "a Hugging Face folder"
)
MESH_HELP = "a shipped mesh's name (e.g. h100x16, cpu16, a100x8) or a TOML path"


def _add_model_args(p: argparse.ArgumentParser, defaults: tuple[str, str]) -> None:
    """--model, --mesh (with the command's defaults) and --dtype."""
    group = p.add_argument_group("model and mesh")
    group.add_argument("--model", default=defaults[0], help=MODEL_HELP)
    group.add_argument("--mesh", default=defaults[1], help=MESH_HELP)
    group.add_argument(
        "--dtype",
        choices=RUN_DTYPES,
        default=None,
        help="weights, activations and KV cache (default: the model file's); an FP8 model's "
        "weights and FP8 KV cache stay FP8",
    )
    group.add_argument(
        "--quantize",
        choices=("fp8",),
        default=None,
        help="FP8 weights: a 16-bit model's matrices quantised per output channel as they are "
        "read, activations quantised per token (the full 16-bit model is never held)",
    )
    group.add_argument(
        "--kv-dtype",
        choices=(*RUN_DTYPES, "float8_e4m3fn"),
        default=None,
        help="the KV cache's dtype (default: the model's); float8_e4m3fn stores K and V "
        "divided by a scale per layer and K/V head (the checkpoint's, else 1)",
    )


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    """The run shape: the same four flags, meaning the same, on every command that plans."""
    group = p.add_argument_group("run shape (each defaults to the model file's [run] table)")
    group.add_argument("--batch", type=positive_int, default=None, help="sequences in a batch")
    group.add_argument(
        "--prompt-len", type=positive_int, default=None, help="prompt tokens per sequence"
    )
    group.add_argument(
        "--gen-len",
        type=positive_int,
        default=None,
        help="new tokens per sequence, the prefill's first included",
    )
    group.add_argument(
        "--microbatches",
        type=positive_int,
        default=None,
        help="microbatches a pipeline runs (default: the fewest >= its stages that divide a "
        "replica's batch)",
    )


def _add_placement_args(p: argparse.ArgumentParser, baseline: bool = True):
    """How the layer-wise plan is made, and (``baseline``) the TP x PP baseline's shape."""
    group = p.add_argument_group("placement")
    group.add_argument(
        "--capacity",
        default=None,
        help="smem | l2 | hbm | a size such as 14.73GB or 50MiB (default: the mesh's)",
    )
    group.add_argument(
        "--strategy",
        choices=tuple(Strategy),
        default=Strategy.GREEDY,
        help="the layer-wise partitioner",
    )
    group.add_argument(
        "--layers-per-stage",
        type=int_list,
        default=None,
        help="with --strategy manual: layers in each stage, e.g. 3,5,4,4",
    )
    if baseline:
        group.add_argument(
            "--tp",
            type=positive_int,
            default=None,
            help=f"baseline tensor parallelism (default {DEFAULT_TP}, at most one host's devices)",
        )
        group.add_argument(
            "--pp",
            type=positive_int,
            default=None,
            help=f"baseline pipeline stages (default {DEFAULT_PP}, as the devices allow)",
        )
    return group


def _add_planning_args(p, defaults: tuple[str, str], baseline: bool = True):
    """What every command that plans takes: model and mesh, run shape, placement."""
    _add_model_args(p, defaults)
    _add_shape_args(p)
    return _add_placement_args(p, baseline)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """What a command that runs the model on this machine takes besides planning: weights,
    prompts, kernels and the multi-host set-up."""
    inputs = p.add_argument_group("weights and prompts")
    inputs.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seeds the weights and the prompts"
    )
    inputs.add_argument(
        "--random-weights",
        action="store_true",
        help="a Hugging Face folder without safetensors runs random weights (from --seed); "
        "without this flag that is an error",
    )
    inputs.add_argument(
        "--checkpoint",
        type=existing_folder,
        default=None,
        help="load trained weights from this directory",
    )
    inputs.add_argument(
        "--text",
        action="append",
        default=None,
        help="a prompt as text (repeat for more sequences); needs a model folder with a "
        "tokenizer.json",
    )
    inputs.add_argument(
        "--prompts",
        default=None,
        help="a file of prompts, one a line: JSON lists of token ids (e.g. [5, 17, 42]), or text "
        "(needs a tokenizer); lengths may differ",
    )
    inputs.add_argument(
        "--chat",
        action="store_true",
        help="render each --text / --prompts text as a user turn through the model folder's "
        "chat template (as transformers' apply_chat_template, with the generation prompt)",
    )
    inputs.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="prompts from a synthetic task (copy, reverse, add); scores the answers",
    )
    kernels = p.add_argument_group("kernels")
    kernels.add_argument(
        "--mlp-kernel",
        choices=tuple(Backend),
        default=Backend.AUTO,
        help="MLP backend: Pallas on GPU / XLA on CPU (auto), or force one",
    )
    kernels.add_argument(
        "--attention",
        choices=tuple(Backend),
        default=Backend.AUTO,
        help="attention backend: Pallas on GPU / XLA on CPU (auto), or force one",
    )
    kernels.add_argument(
        "--strict",
        action="store_true",
        help="fail instead of falling back to XLA when Pallas cannot run",
    )
    multi = p.add_argument_group("multi-host (one process per host; see `jaxpart launch`)")
    multi.add_argument("--coordinator", default=None, help="host:port of process 0")
    multi.add_argument(
        "--num-processes", type=positive_int, default=1, help="processes in the run, one a host"
    )
    multi.add_argument(
        "--process-id", type=nonnegative_int, default=0, help="this process: 0 .. N - 1"
    )
    multi.add_argument(
        "--init-timeout",
        type=positive_int,
        default=60,
        help="seconds to wait for the other processes",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxpart",
        description="Place a dense decoder on a device mesh layer-wise or as TP x PP, run both, "
        "measure them side by side, and predict them for GPU pods. Start with `jaxpart compare`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="partition a model's layers onto a mesh and print the plan")
    placement = _add_planning_args(p, PREDICT_DEFAULTS, baseline=False)
    placement.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="devices to plan for (default: the mesh's)",
    )
    placement.add_argument(
        "--figures",
        choices=("derived", "stated"),
        default="derived",
        help="per-layer bytes from the dims, or the seed's stated figures",
    )
    search = p.add_argument_group("search")
    search.add_argument(
        "--auto",
        action="store_true",
        help="search TP x PP, layer-wise plans, replicas and microbatch counts; print the 10 "
        "best that fit HBM by the memory model, ranked by the perf model",
    )
    search.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=OBJECTIVES[0],
        help="with --auto: rank by predicted TPS at the run's batch, by TPS at the largest "
        "batch each plan's KV cache holds (max-throughput), or by TPOT or TTFT (lower first)",
    )
    search.add_argument(
        "--engine",
        choices=tuple(engines()),
        default=None,
        help="the engine profile to predict and size the KV cache with (default: --export's "
        "engine, else jaxpart's own executors)",
    )
    search.add_argument(
        "--export",
        choices=EXPORT_ENGINES,
        default=None,
        help="print the plan (with --auto: the best) as that engine's settings: TP and PP "
        "sizes, the layer partition in the syntax its parser takes, replicas",
    )
    p.add_argument(
        "--json",
        type=output_file,
        default=None,
        help="also write the plan (or --auto's 10) as JSON",
    )

    g = sub.add_parser("generate", help="generate (greedy or sampled) by one method on the mesh")
    _add_planning_args(g, RUN_DEFAULTS).add_argument(
        "--method",
        choices=tuple(Method),
        default=Method.LAYERWISE,
        help="one device, TP x PP, or the layer-wise plan",
    )
    _add_run_args(g)
    g.add_argument(
        "--prompt",
        type=int_list,
        default=None,
        help="token ids for every sequence, e.g. 5,17,42 (default: random from --seed)",
    )
    sampling = g.add_argument_group("sampling and stopping (jaxpart.GenerationConfig)")
    sampling.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default: 0)")
    sampling.add_argument(
        "--top-k", type=nonnegative_int, default=0, help="keep the k likeliest (0: off)"
    )
    sampling.add_argument(
        "--top-p",
        type=finite_float,
        default=1.0,
        help="keep the smallest set with this mass (1: off)",
    )
    sampling.add_argument(
        "--sampling-seed",
        type=nonnegative_int,
        default=0,
        help="the key of sequence i at token t is fold_in(fold_in(key(seed), i), t) (default: 0)",
    )
    sampling.add_argument(
        "--stop-tokens",
        type=int_list,
        default=None,
        help="token ids that end a sequence, e.g. 2,7 (the tokenizer's EOS is added); a stopped "
        "sequence emits --pad-token",
    )
    sampling.add_argument(
        "--pad-token", type=nonnegative_int, default=0, help="emitted after a stop"
    )
    output = g.add_argument_group("output")
    output.add_argument(
        "--show",
        type=positive_int,
        default=None,
        help="print the first N sequences (default: every one)",
    )
    output.add_argument(
        "--json", type=output_file, default=None, help="write {method, tokens, plan} to this file"
    )

    c = sub.add_parser("compare", help="baseline vs layer-wise, side by side (the main job)")
    _add_planning_args(c, RUN_DEFAULTS).add_argument(
        "--auto",
        action="store_true",
        help="run the best layer-wise plan and the best TP x PP plan that plan --auto finds for "
        "this mesh and run shape, instead of --capacity/--strategy/--tp/--pp",
    )
    _add_run_args(c)
    measure = c.add_argument_group("measuring and predicting")
    measure.add_argument(
        "--repeats", type=positive_int, default=5, help="timed runs; medians reported"
    )
    measure.add_argument(
        "--predict-for",
        nargs=2,
        metavar=("MODEL", "MESH"),
        default=["dense16", "h100x16"],
        help="after the measured table, the perf model's prediction for this model and GPU mesh "
        "(default: the seed's pod, dense16 on h100x16)",
    )
    output = c.add_argument_group("output")
    output.add_argument(
        "--json",
        type=output_file,
        default=None,
        help="write the measurements and plans to this file",
    )
    output.add_argument(
        "--plot", type=png_file, default=None, help="write a PNG bar chart of TPS and TPOT"
    )

    s = sub.add_parser("simulate", help="predict both placements on a GPU pod (perf model)")
    _add_planning_args(s, PREDICT_DEFAULTS)
    predict = s.add_argument_group("prediction")
    predict.add_argument(
        "--engine",
        choices=tuple(engines()),
        default="jaxpart",
        help="the engine profile to predict with (jaxpart/data/engines.toml): jaxpart's own "
        "executors, or TensorRT-LLM, vLLM, FasterTransformer, gpt-fast",
    )
    predict.add_argument(
        "--calibration", default=None, help="a bench_gpu.json to replace datasheet figures"
    )
    predict.add_argument(
        "--sweep", default=None, help="e.g. d_model=1024,2048,4096,8192 or batch=..."
    )
    predict.add_argument(
        "--map",
        nargs=2,
        metavar=("X=V1,V2", "Y=V1,V2"),
        default=None,
        help="a crossover map over two of batch, prompt, gen, mesh and model (e.g. "
        "batch=1,8,64,256 prompt=1024,8192): the winner of each cell and its margin",
    )
    predict.add_argument(
        "--plot", type=png_file, default=None, help="with --map: write the map as a PNG heatmap"
    )
    predict.add_argument(
        "--validate",
        action="store_true",
        help="print the model's predictions beside published GPU measurements, and its error",
    )
    s.add_argument(
        "--json", type=output_file, default=None, help="write the predictions to this file"
    )

    t = sub.add_parser("train", help="train the small model on a synthetic task (optax)")
    t.add_argument("--model", default=RUN_DEFAULTS[0], help=MODEL_HELP)
    t.add_argument("--task", choices=TASKS, default="copy", help="the synthetic task")
    # Defaults (None here) are TrainConfig's: steps 300, batch 64, lr 3e-3, every 100.
    t.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="total steps; a resumed run continues to this many (the same --steps resumes "
        "exactly: the learning-rate schedule spans them)",
    )
    t.add_argument(
        "--batch", type=positive_int, default=None, help="sequences a step (default: 64)"
    )
    t.add_argument(
        "--lr", type=positive_float, default=None, help="peak learning rate (default: 3e-3)"
    )
    t.add_argument("--seed", type=nonnegative_int, default=0, help="seeds weights and data")
    t.add_argument(
        "--checkpoint",
        type=checkpoint_folder,
        default=None,
        help="save here every --every steps; resume from the newest checkpoint here",
    )
    t.add_argument(
        "--every", type=positive_int, default=None, help="steps between saves (default: 100)"
    )

    la = sub.add_parser("launch", help="try a multi-host run: N processes on this machine")
    la.add_argument(
        "--processes", type=positive_int, default=2, help="processes to start on this machine"
    )
    la.add_argument(
        "--init-timeout",
        type=positive_int,
        default=60,
        help="seconds each process waits for the others",
    )
    la.add_argument(
        "run",
        nargs=argparse.REMAINDER,
        help="-- then a jaxpart run command: generate ... or compare ...",
    )

    v = sub.add_parser("verify", help="compile the full-size model abstractly; check its memory")
    _add_planning_args(v, PREDICT_DEFAULTS).add_argument(
        "--method",
        choices=PLACEMENTS,
        default=Method.LAYERWISE,
        help="the placement to compile",
    )
    v.add_argument("--json", type=output_file, default=None, help="write the figures to this file")
    return parser


def defaults_of(command: str) -> dict:
    """Each option of ``command`` and its default, as --help shows them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.default for a in sub.choices[command]._actions}
