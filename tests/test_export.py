"""Plans as serving engines' settings (`plan --export`), capacity-limited batches and crossover
maps (`simulate --map`)."""

import json
import re

import pytest

from jaxpart.cli import main
from jaxpart.config import RunShape, load_mesh
from jaxpart.config.model import load_model
from jaxpart.perf.engines import engine
from jaxpart.planning.baseline import baseline_plan
from jaxpart.planning.capacity import balanced_split, capacity, even_split
from jaxpart.planning.export import default_split, export_plan


def vllm_partition(text: str, num_hidden_layers: int, pp_size: int) -> list[int]:
    """vLLM's parsing of VLLM_PP_LAYER_PARTITION, as vllm/distributed/utils.py get_pp_indices
    does it (vllm-project/vllm at 5a6541db9bfa77756459722f69e8c89a0b47a14d):

        partitions = [int(layer) for layer in partition_list_str.split(",")]
        if len(partitions) != pp_size: raise ValueError(...)
        if sum(partitions) != num_hidden_layers: raise ValueError(...)

    SGLang's get_pp_indices (python/sglang/srt/distributed/utils.py at 1107be11) parses
    SGLANG_PP_LAYER_PARTITION with the same three lines."""
    partitions = [int(layer) for layer in text.split(",")]
    if len(partitions) != pp_size:
        raise ValueError(f"{len(partitions)=} does not match {pp_size=}.")
    if sum(partitions) != num_hidden_layers:
        raise ValueError(f"{sum(partitions)=} does not match {num_hidden_layers=}.")
    return partitions


def trtllm_partition(yaml_text: str, num_layers: int, pp_size: int) -> list[int]:
    """TensorRT-LLM's pp_partition (an Optional[List[int]] LLM-API field, given in the YAML of
    --extra_llm_api_options), checked as Mapping.pp_layers checks it (PR #9003):

        if len(self.pp_partition) != self.pp_size: raise ValueError(...)
        if sum(self.pp_partition) != num_layers: raise ValueError(...)"""
    line = next(s for s in yaml_text.splitlines() if s.startswith("pp_partition:"))
    partition = json.loads(line.split(":", 1)[1])  # a YAML flow list of ints
    assert all(isinstance(n, int) for n in partition)
    if len(partition) != pp_size:
        raise ValueError(f"{len(partition)=} does not match {pp_size=}.")
    if sum(partition) != num_layers:
        raise ValueError(f"{sum(partition)=} does not match {num_layers=}.")
    return partition


def flag(command: str, name: str) -> int:
    return int(re.search(rf"{name} (\d+)", command).group(1))


@pytest.mark.parametrize(
    "name, sizes",
    [("vllm", [19, 21, 21, 19]), ("sglang", [19, 21, 21, 19]), ("trtllm", [21, 19, 20, 20])],
)
def test_each_engines_parser_takes_the_exported_partition(name, sizes):
    model, mesh = load_model("llama3.1-70b"), load_mesh("h100x8")
    shape = RunShape(8, 1024, 1024)
    plan = baseline_plan(model, mesh, shape, 2, 4, sizes=sizes)
    out = export_plan(plan, mesh, name, engine(name).memory)
    (command,) = out.commands
    if name == "trtllm":
        assert trtllm_partition(out.files["pp.yaml"], 80, 4) == sizes
        assert "free_gpu_memory_fraction: 0.9" in out.files["pp.yaml"]
        assert (flag(command, "--tp_size"), flag(command, "--pp_size")) == (2, 4)
        assert "--extra_llm_api_options pp.yaml" in command
    else:
        var = "VLLM_PP_LAYER_PARTITION" if name == "vllm" else "SGLANG_PP_LAYER_PARTITION"
        text = re.search(rf"{var}=(\S+) ", command).group(1)
        assert vllm_partition(text, 80, 4) == sizes
        tp_flag, pp_flag = (
            ("--tensor-parallel-size", "--pipeline-parallel-size")
            if name == "vllm"
            else ("--tp-size", "--pp-size")
        )
        assert (flag(command, tp_flag), flag(command, pp_flag)) == (2, 4)
    # the parser refuses what does not match the model (so the check above can fail)
    with pytest.raises(ValueError):
        vllm_partition("41,39", 80, 4)


def test_the_engines_default_splits_follow_their_code():
    # vLLM: leftovers from the second-to-last stage towards the first; SGLang: the last stages;
    # TensorRT-LLM (torch.tensor_split): the first stages
    assert default_split("vllm", 81, 2) == [41, 40]
    assert default_split("sglang", 81, 2) == [40, 41]
    assert default_split("trtllm", 81, 2) == [41, 40]
    assert default_split("vllm", 80, 3) == [27, 27, 26]
    assert default_split("sglang", 80, 3) == [26, 27, 27]
    assert default_split("trtllm", 80, 3) == [27, 27, 26]
    assert default_split("vllm", 10, 4) == [2, 3, 3, 2]


def test_replicas_run_as_each_engine_runs_them():
    model, mesh = load_model("llama3.1-8b"), load_mesh("h100x8")
    plan = baseline_plan(model, mesh, RunShape(8, 64, 64), 2, 2)  # two replicas of 4 devices
    vllm = export_plan(plan, mesh, "vllm", engine("vllm").memory)
    assert [c.split()[0] for c in vllm.commands] == [
        "CUDA_VISIBLE_DEVICES=0,1,2,3",
        "CUDA_VISIBLE_DEVICES=4,5,6,7",
    ]
    sglang = export_plan(plan, mesh, "sglang", engine("sglang").memory)
    assert len(sglang.commands) == 1 and flag(sglang.commands[0], "--dp-size") == 2
    trt = export_plan(plan, mesh, "trtllm", engine("trtllm").memory)
    assert len(trt.commands) == 2 and "--port 8001" in trt.commands[1]


def test_plan_auto_exports_for_vllm_with_its_prediction(capsys, tmp_path):
    path = tmp_path / "a.json"
    args = ["plan", "--model", "llama3.1-70b", "--mesh", "h100x8", "--auto", "--export", "vllm"]
    assert main([*args, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vllm serve $MODEL --tensor-parallel-size" in out
    assert "engine vllm" in out and "(predicted: memory model, meshes/h100x8.toml" in out
    doc = json.loads(path.read_text())
    assert doc["engine"] == "vllm" and doc["export"]["engine"] == "vllm"
    top = doc["top"][0]
    assert doc["export"]["tp"] == top["split"] and doc["export"]["pp"] == top["stages"]
    # --engine other than the export's is refused: the export is predicted with its own
    assert main([*args, "--engine", "trtllm"]) == 2


def big_vocab():
    # a small model whose embedding and head are as large as several layers: the split that
    # gives the tightest stage the most room gives the edge stages fewer layers
    return load_model("llama3.1-8b").replace(name="wide-vocab", vocab=1_024_000, n_layers=24)


def test_the_balanced_split_holds_no_fewer_sequences_than_the_even_split():
    mesh, shape = load_mesh("l4x8"), RunShape(1, 512, 512)
    for model in (big_vocab(), load_model("llama3.1-8b")):
        for stages in (2, 3, 4, 8):
            for name in ("vllm", "trtllm", "jaxpart"):
                memory = engine(name).memory
                even = even_split(model.n_layers, stages)
                balanced = balanced_split(model, mesh, stages, 1, shape, memory)
                assert sum(balanced) == model.n_layers and min(balanced) >= 1
                a = capacity(model, mesh, balanced, 1, 1, shape, memory).batch
                b = capacity(model, mesh, even, 1, 1, shape, memory).batch
                assert a >= b, (model.name, stages, name, balanced, even)
    wide = balanced_split(big_vocab(), mesh, 4, 1, shape, engine("vllm").memory)
    assert wide[0] < wide[1] and wide[-1] < wide[-2]  # the edges hold the embedding and head


def test_a_stage_holds_what_its_pool_leaves_for_kv():
    model, mesh = load_model("llama3.1-8b"), load_mesh("h100x8")
    shape = RunShape(1, 1000, 24)
    room = capacity(model, mesh, [16, 16], 1, 1, shape, engine("vllm").memory)
    first = room.stages[0]
    pool = 0.9 * mesh.tiers["hbm"].capacity_bytes - first.fixed_bytes
    # llama3.1-8b: 8 K/V heads of 128, bf16: 4 KiB a position a layer for K and V
    assert first.kv_bytes_per_sequence == 16 * 1024 * 2 * 8 * 128 * 2
    assert first.sequences == int(pool // first.kv_bytes_per_sequence)
    assert room.batch == min(s.sequences for s in room.stages)


def test_max_throughput_reports_the_even_and_balanced_split_on_a_pcie_mesh(capsys):
    args = ["plan", "--model", "llama3.1-70b", "--mesh", "l40sx8", "--auto"]
    assert main([*args, "--objective", "max-throughput", "--engine", "vllm"]) == 0
    out = capsys.readouterr().out
    match = re.search(
        r"balanced split [\d,]+ holds ([\d,]+); vLLM's default split [\d,]+ holds ([\d,]+)", out
    )
    assert match, out
    balanced, even = (int(g.replace(",", "")) for g in match.groups())
    assert balanced >= even > 0
    assert (
        "max batch:" in out and "(predicted: memory model, meshes/l40sx8.toml, engine vllm)" in out
    )


def test_a_crossover_map_names_tp_at_batch_one_on_one_node(capsys, tmp_path):
    png, js = tmp_path / "m.png", tmp_path / "m.json"
    args = ["simulate", "--model", "llama3.1-70b", "--mesh", "h100x8"]
    args += ["--map", "batch=1,8,64,256", "prompt=512,1024", "--plot", str(png), "--json", str(js)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Crossover map" in out and "(predicted)" in out and "engine jaxpart" in out
    doc = json.loads(js.read_text())
    lo, _ = doc["band_factors"]
    one = [c for c in doc["cells"] if c["x"] == "1"]
    assert len(one) == 2
    for cell in one:  # tensor parallelism inside the node, beyond the model's error
        assert cell["winner"] in ("baseline", "best TPxPP")
        assert "TP8" in cell["labels"][cell["winner"]]
        assert cell["margin"] * lo > 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--map", "batch=1,x", "prompt=1"], "--map batch=1,x: 'x'"),
        (["--map", "batch=1", "batch=2"], "both axes are 'batch'"),
        (["--map", "size=1", "batch=2"], "--map 'size=1'"),
        (["--map", "mesh=nope", "batch=1"], "--mesh = 'nope'"),
        (["--plot", "x.png"], "--plot = x.png: draws a --map"),
    ],
)
def test_a_bad_map_is_a_one_line_error(argv, words, capsys):
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_paged_cache_holds_a_windowed_layer_to_its_window():
    # Gemma 3's local layers keep 1024 positions in a paged cache: more sequences fit than if
    # every layer held the whole context; jaxpart's whole-context caches gain nothing.
    model, mesh = load_model("gemma3-12b"), load_mesh("h100x8")
    shape = RunShape(8, 4096, 4096)
    full = model.replace(layer_windows=())
    paged = engine("vllm").memory
    assert capacity(model, mesh, [48], 8, 1, shape, paged).batch > (
        capacity(full, mesh, [48], 8, 1, shape, paged).batch
    )
    own = engine("jaxpart").memory
    assert capacity(model, mesh, [48], 8, 1, shape, own).batch == (
        capacity(full, mesh, [48], 8, 1, shape, own).batch
    )
