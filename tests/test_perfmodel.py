"""The performance model: hand-computed limits, FLOPs against XLA's own count, the simulate and
verify commands end to end, and calibration from a bench_gpu.py result."""

import json
import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import pytest

from jaxpart.cli import main
from jaxpart.config import ConfigError, Link, RunShape, default_run, load_mesh, load_model
from jaxpart.model.decoder import empty_cache, init_params
from jaxpart.model.layers import forward
from jaxpart.perf.engines import engine
from jaxpart.perf.predict import (
    Constants,
    allreduce_s,
    calibrate,
    constants_from,
    decode_step_flops,
    floor,
    predict,
    tensor_allreduce_s,
)
from jaxpart.planning.memory import layer_memory, layer_weight_bytes
from jaxpart.planning.plan import make_plan

LINK = Link(
    "test",
    bandwidth_bytes_per_s=1e9,
    latency_s=1e-5,
    allreduce_latency_s=2e-5,
    allreduce_busbw_bytes_per_s=1e10,
)


def constants(**changes):
    base = dict(
        hbm_bytes_per_s=1e12,
        l2_bytes_per_s=4e12,
        l2_capacity=0,
        peak_flops=1e30,
        intra_host=LINK,
        inter_host=LINK,
        devices_per_host=16,
    )
    return Constants(**{**base, **changes})


def test_pure_bandwidth_bound_stage():
    # One stage holding all 16 layers, one microbatch, compute free, no launch or step cost,
    # nothing resident in L2: a decode step reads every weight, the KV cache of the mean context
    # and the LM head once from HBM, plus activations (a few KB here).
    cfg = load_model("dense16-tiny")
    batch, prompt, gen = 16, 16, 9
    shape = RunShape(batch, prompt, gen, microbatches=1)
    plan = make_plan(cfg, load_mesh("cpu16"), shape, "hbm", devices=1)
    assert plan.n_stages == 1 and plan.split == 1
    c = constants()
    p = predict("layerwise", cfg, plan, c, shape)
    mem = layer_memory(cfg, shape)
    context = prompt + (gen - 1) / 2
    kv = 16 * 2 * batch * context * cfg.d_model * 4
    head = cfg.d_model * cfg.vocab * 4 + batch * cfg.vocab * 4  # weights and f32 logits
    # Activations each kernel reads and writes (float32, MHA: q = k = v width = d_model):
    # norms 2 x 2, Q/K/V in + out 1 + 3, output projection 1 + 1, attention q, o, k, v 4,
    # MLP up 1 + d_ff / d, down d_ff / d + 1, all of batch x d_model x 4 bytes.
    act = batch * cfg.d_model * 4
    per_layer = act * (4 + 4 + 2 + 4 + 2 + 2 * cfg.d_ff / cfg.d_model)
    step = (16 * (mem.weight_bytes + per_layer) + kv + head) / 1e12  # S = M = 1: tick = step
    assert p.tpot_ms == pytest.approx(1e3 * step, rel=1e-12)
    assert p.tps == pytest.approx(batch / (p.tpot_ms / 1e3), rel=1e-12)
    assert p.ms_per_token_amortized == pytest.approx(1e3 / p.tps)
    # A launch cost per kernel adds exactly (7 kernels x 16 layers + the head) launches.
    q = predict("layerwise", cfg, plan, constants(launch_s=1e-6), shape)
    assert q.tpot_ms - p.tpot_ms == pytest.approx(1e-3 * (7 * 16 + 1), rel=1e-9)


def test_l2_resident_weights_are_reread_at_l2_bandwidth():
    cfg = load_model("dense16-tiny")
    shape = RunShape(16, 16, 5, microbatches=4)
    plan = make_plan(cfg, load_mesh("cpu16"), shape, "hbm", devices=1)
    p1 = predict("x", cfg, plan, constants(l2_capacity=0), shape)
    p2 = predict("x", cfg, plan, constants(l2_capacity=10**9), shape)
    assert not p1.decode_tick.resident_in_l2 and p2.decode_tick.resident_in_l2
    mlp = 16 * 2 * cfg.d_model * cfg.d_ff * 4  # gelu: w1 and w2, f32
    saving = 1e6 * (mlp / 1e12 - mlp / 4e12)
    assert p2.decode_tick.l2_saving_us == pytest.approx(saving)
    assert p1.decode_tick.l2_saving_us == 0.0
    assert p2.tpot_ms < p1.tpot_ms
    # Engines without eviction hints get no L2 residency, whatever fits.
    p3 = predict("x", cfg, plan, constants(l2_capacity=10**9), shape, engine=engine("trtllm"))
    assert not p3.decode_tick.resident_in_l2


def test_pure_latency_bound_all_reduce():
    assert allreduce_s(0, 8, LINK) == 2e-5
    assert allreduce_s(1e6, 8, LINK) == pytest.approx(2e-5 + 1e6 * 2 * 7 / 8 / 1e10)
    assert allreduce_s(1e9, 1, LINK) == 0.0


def test_an_all_reduce_across_hosts_is_hierarchical_over_every_nic():
    nvlink = Link("nvlink", 4e11, 1e-5, 25e-6, 3.7e11)
    ib = Link("ib", 5e10, 15e-6, 46e-6, 5e10)
    c = constants(intra_host=nvlink, inter_host=ib, devices_per_host=8, nics_per_host=8)
    size = 1e6
    # Inside a host: one ring over NVLink.
    assert tensor_allreduce_s(size, 8, c) == allreduce_s(size, 8, nvlink)
    # TP16 over 2 hosts: reduce-scatter + all-gather inside each host (one all-reduce's
    # volume), and each GPU's 1/8 shard all-reduced with its peer on the other host, all 8
    # NICs at once: 2 x (2 - 1) / 2 x size / 8 over one NIC's bandwidth.
    across = 46e-6 + size / 8 * 2 * (2 - 1) / 2 / 5e10
    assert tensor_allreduce_s(size, 16, c) == pytest.approx(allreduce_s(size, 8, nvlink) + across)
    # TP32 over 4 hosts; and one NIC a host carries all of a host's shards.
    across4 = 46e-6 + size / 8 * 2 * 3 / 4 / 5e10
    assert tensor_allreduce_s(size, 32, c) == pytest.approx(allreduce_s(size, 8, nvlink) + across4)
    one_nic = replace(c, nics_per_host=1)
    assert tensor_allreduce_s(size, 16, one_nic) == pytest.approx(
        allreduce_s(size, 8, nvlink) + 46e-6 + size * 2 * (2 - 1) / 2 / 5e10
    )
    # Far cheaper than one ring over every rank at the slowest link's speed, once the bytes
    # (not the two latencies) decide: at 64 MB, under a quarter of it.
    assert tensor_allreduce_s(64e6, 16, c) < allreduce_s(64e6, 16, ib) / 4


def test_mesh_files_say_how_many_nics_a_host_has(tmp_path):
    assert load_mesh("h100x16").nics_per_host == 8
    assert load_mesh("cpu16").nics_per_host == 16  # not given: one a device
    assert load_mesh("h100x16").sized(4).nics_per_host == 4
    from jaxpart.config import resolve

    text = (
        resolve("h100x16", "meshes").read_text().replace("nics_per_host = 8", "nics_per_host = 0")
    )
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="field 'nics_per_host' = 0"):
        load_mesh(str(path))


def test_predicted_flops_match_xla_within_10_percent():
    cfg = load_model("dense16-tiny")
    params = jax.eval_shape(lambda: init_params(cfg, 0))
    batch = 16
    k, v = jax.eval_shape(lambda: empty_cache(cfg, batch, jnp.float32))
    token = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    # Unrolled: XLA's cost analysis counts a loop body once, the attention's loop over KV
    # blocks included; tiny's 64 positions are one block, so the step attends over seq_len.
    step = jax.jit(lambda p, t, k, v: forward(p, t, k, v, 20, unroll=True))
    cost = step.lower(params, token, k, v).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    predicted = decode_step_flops(cfg, batch, cfg.seq_len)
    assert abs(cost["flops"] / predicted - 1) < 0.10
    # Bytes: XLA counts every operand of every op (intermediates, cache update copies), so its
    # figure is several times the minimum the model uses (weights + KV read once).
    minimum = 16 * layer_weight_bytes(cfg) + 16 * 2 * batch * cfg.seq_len * 128 * 4
    assert cost["bytes accessed"] > minimum


def test_floor_by_hand():
    cfg = load_model("dense16")
    c = constants_from(load_mesh("h100x16"))
    fl = floor(cfg, c, 16, RunShape(128, 9872, 128))
    kv = 16 * 2 * 128 * (9872 + 127 / 2) * 4096 * 2
    assert fl.floor_tpot_ms == pytest.approx(1e3 * (16 * 402_653_184 + kv) / (16 * 3.35e12))
    assert fl.max_tps == pytest.approx(128 / (fl.floor_tpot_ms / 1e3))


def test_simulate_dense16(capsys, tmp_path):
    path = tmp_path / "s.json"
    assert main(["simulate", "--model", "dense16", "--mesh", "h100x16", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "predicted" in out and "the seed's claim" in out and "physical floor" in out
    assert "IMPOSSIBLE" in out, "0.078 ms cannot be an inter-token latency"
    doc = json.loads(path.read_text())
    assert [m["name"] for m in doc["methods"]] == ["baseline", "layerwise"]
    for m in doc["methods"]:
        assert m["source"] == "predicted" and m["tps"] > 0 and m["tpot_ms"] > 0
        assert m["ms_per_token_amortized"] == pytest.approx(1000 / m["tps"])
    assert doc["floor_tpot_ms"] > 0
    assert doc["predicted_by"] == "perf model, meshes/h100x16.toml"
    for m in doc["methods"]:
        assert m["tpot_ms"] >= doc["floor_tpot_ms"], "no prediction beats the physical floor"


def test_simulate_sweep_names_the_crossover(capsys):
    code = main(
        [
            "simulate",
            "--model",
            "dense16",
            "--mesh",
            "h100x16",
            "--sweep",
            "d_model=1024,2048,4096,8192",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "crossover between d_model" in out or "never overtakes" in out or "whole range" in out
    # The seed's run shape plus three values predicted both ways; at d_model 8192 the baseline
    # does not fit the H100s' HBM (memory model), which the sweep says instead of a ratio.
    assert out.count("layerwise / baseline TPS") == 4
    assert "d_model = 8192: baseline cannot be planned" in out and "of HBM" in out
    assert "layerwise alone:" in out


@pytest.mark.parametrize("sweep", ["d_model=", "d_model=1000", "heads=8", "d_model=-1"])
def test_bad_sweep(capsys, sweep):
    assert main(["simulate", "--model", "dense16", "--mesh", "h100x16", "--sweep", sweep]) == 2
    assert "--sweep" in capsys.readouterr().err


def test_calibration_replaces_constants(tmp_path):
    bench = {
        "device": "NVIDIA H100 80GB HBM3",
        "platform": "gpu",
        "ceilings": {"copy_bytes_per_s": 3.0e12, "matmul_flops_per_s": 7.9e14},
        "l2": {"fits_l2": {"effective_bytes_per_s": 5.0e12}},
        "mlp": [{"pallas": {"bytes_per_s": 2.7e12}}, {"error": "not timed"}],
    }
    path = tmp_path / "bench_gpu.json"
    path.write_text(json.dumps(bench))
    mesh = load_mesh("h100x16")
    c = calibrate(constants_from(mesh), str(path), mesh)
    # Datasheet peaks stay; the achieved shares are what the bench measured.
    assert (c.hbm_bytes_per_s, c.peak_flops, c.l2_bytes_per_s) == (3.35e12, 989e12, 5.0e12)
    assert c.hbm_efficiency == pytest.approx(3.0 / 3.35)
    assert c.compute_efficiency == pytest.approx(790 / 989)
    assert len(c.replaced) == 4 and "hbm efficiency 0.85 -> 0.90" in c.replaced[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not a bench_gpu.py result"):
        calibrate(c, str(bad), mesh)


@pytest.mark.parametrize(
    "platform, device",
    [("cpu", "cpu"), ("gpu", "NVIDIA A100-SXM4-80GB"), ("gpu", "NVIDIA H200")],
)
def test_calibration_from_another_device_is_refused(capsys, tmp_path, platform, device):
    bench = {
        "device": device,
        "platform": platform,
        "ceilings": {"copy_bytes_per_s": 3.0e10, "matmul_flops_per_s": 0.0},
        "l2": {"fits_l2": {"effective_bytes_per_s": 5.0e10}},
        "mlp": [],
    }
    path = tmp_path / "bench_gpu.json"
    path.write_text(json.dumps(bench))
    args = ["simulate", "--model", "dense16", "--mesh", "h100x16", "--calibration", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"measured on {device!r} ({platform})" in err and "NVIDIA H100 80GB HBM3" in err
    assert err.count("\n") == 1


def test_verify_dense16_layerwise_matches_the_memory_model(capsys, tmp_path):
    path = tmp_path / "v.json"
    code = main(
        [
            "verify",
            "--model",
            "dense16",
            "--mesh",
            "h100x16",
            "--method",
            "layerwise",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    doc = json.loads(path.read_text())
    # The memory model within 10% of XLA's compiled peak; weights, head and caches exactly.
    assert abs(doc["predicted_over_xla_peak"] - 1) < 0.10
    assert math.isclose(doc["predicted_state_over_xla"], 1.0, rel_tol=0.01)
    assert doc["fits_hbm"] is True
    assert "fits 80.00 GB" in capsys.readouterr().out
    # Lowered for CUDA with the kernels a GPU run uses: paged decode attention and the two MLP
    # kernels in decode, flash attention in prefill (its MLP rows go to XLA). Per device, the
    # largest buffer either makes is at most twice a prefill microbatch's activations.
    cuda = doc["cuda"]
    assert cuda["decode"]["pallas_kernels"] == 3 and cuda["prefill"]["pallas_kernels"] == 1
    activation = 8 * 9872 * 4096 * 2
    assert cuda["prefill"]["largest_intermediate_bytes"] <= 2 * activation
    assert cuda["decode"]["largest_intermediate_bytes"] < activation


def _fp8_copy(tmp_path, name="gqa-tiny"):

    from jaxpart.config import resolve

    text = resolve(name, "models").read_text()
    fp8 = 'dtype = "float32"\nweight_dtype = "float8_e4m3fn"\nkv_dtype = "float8_e4m3fn"'
    path = tmp_path / "fp8.toml"
    path.write_text(text.replace('dtype = "float32"', fp8))
    return str(path)


def test_fp8_plans_simulates_verifies_and_runs(tmp_path, capsys):
    model = _fp8_copy(tmp_path)
    assert main(["plan", "--model", model, "--mesh", "cpu16"]) == 0
    assert main(["simulate", "--model", "llama3.1-70b-fp8", "--mesh", "h100x16"]) == 0
    path = tmp_path / "v.json"
    args = ["verify", "--model", model, "--mesh", "cpu16", "--method", "baseline"]
    assert main([*args, "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    # XLA's arguments and outputs (FP8 weights and cache) are what the memory model predicts
    assert math.isclose(doc["predicted_state_over_xla"], 1.0, rel_tol=0.01)
    capsys.readouterr()
    assert main(["generate", "--model", model, "--mesh", "cpu16", "--method", "baseline"]) == 0
    out = capsys.readouterr().out
    assert "float32; FP8 e4m3 (jaxpart): per-channel weight scales" in out
    assert "KV cache float8_e4m3fn" in out


def test_running_refuses_16_bit_storage_beside_another_dtype(tmp_path, capsys):
    from jaxpart.config import resolve

    text = resolve("gqa-tiny", "models").read_text()
    path = tmp_path / "w.toml"
    path.write_text(
        text.replace('dtype = "float32"', 'dtype = "float32"\nweight_dtype = "bfloat16"')
    )
    assert main(["generate", "--model", str(path), "--mesh", "cpu16"]) == 2
    err = capsys.readouterr().err
    assert "field 'weight_dtype' = 'bfloat16': running needs it equal" in err
    assert err.count("\n") == 1


def test_the_readme_figures_for_dense16_are_what_the_tools_compute(tmp_path):
    # The README quotes dense16's plan and simulate figures; new model fields (K/V heads, MLP
    # kind, dtypes) must leave them as they were, and the README must say what the tools print.
    from pathlib import Path

    from jaxpart.config import format_bytes

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    mem = layer_memory(load_model("dense16"), default_run("dense16"))
    assert (mem.params, format_bytes(mem.weight_bytes)) == (201_326_592, "402.65 MB")
    assert format_bytes(mem.kv_cache_bytes) == "21.47 GB"
    assert "0.40 GB weights and 21.47 GB KV cache per layer" in readme
    path = tmp_path / "s.json"
    assert main(["simulate", "--model", "dense16", "--mesh", "h100x16", "--json", str(path)]) == 0
    sim = json.loads(path.read_text())
    tps = {m["name"]: f"{m['tps']:,.0f}" for m in sim["methods"]}
    assert tps == {"baseline": "13,071", "layerwise": "10,323"}
    assert f"{sim['floor']['floor_tpot_ms']:.2f}" == "6.34"
    assert f"{sim['floor']['max_tps']:,.0f}" == "20,189"
    ratio = sim["ratios"]["tps_layerwise_over_baseline"]
    lo, hi = (ratio * f for f in sim["ratios"]["band_factors"])
    assert f"{lo:.2f}-{hi:.2f}x" == "0.62-1.01x"
    for quoted in (
        "13,071 TPS",
        "10,323 TPS, 0.79x",
        "0.62-1.01x",
        "6.34 ms a step (at most 20,189 TPS",
    ):
        assert quoted in readme.replace("\n", " "), quoted


@pytest.mark.slow
def test_verify_runs_on_llama_70b(tmp_path):
    path = tmp_path / "v.json"
    args = ["verify", "--model", "llama3.1-70b", "--mesh", "h100x16", "--method", "baseline"]
    assert main([*args, "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert abs(doc["predicted_over_xla_peak"] - 1) < 0.10
    assert math.isclose(doc["predicted_state_over_xla"], 1.0, rel_tol=0.01)
    assert doc["cuda"]["decode"]["pallas_kernels"] == 3  # paged attention, gated up, down
    cost = doc["cost_check"] if "cost_check" in doc else None
    assert cost is None or abs(cost["xla_flops"] / cost["model_flops"] - 1) < 0.03


@pytest.mark.parametrize(
    "args, missing, fragment",
    [
        (
            ["--model", "llama3.1-70b", "--batch", "1"],
            "layerwise",
            "--batch = 1: must be divisible",
        ),
        (["--model", "llama3.1-70b", "--tp", "1", "--pp", "1"], "baseline", "more than its"),
    ],
)
def test_simulate_predicts_what_it_can_plan_and_names_what_it_cannot(
    tmp_path, capsys, args, missing, fragment
):
    path = tmp_path / "s.json"
    assert main(["simulate", *args, "--mesh", "h100x16", "--json", str(path)]) == 0
    sim = json.loads(path.read_text())
    other = {"baseline": "layerwise", "layerwise": "baseline"}[missing]
    assert [m["name"] for m in sim["methods"]] == [other]
    assert fragment in sim["unplanned"][missing]
    assert sim["ratios"]["tps_layerwise_over_baseline"] is None
    assert f"{missing}: not predicted, it cannot be planned" in capsys.readouterr().out


def test_the_seeds_claims_stand_beside_the_seed_model_only(tmp_path):
    for model, claims in (("dense16", 2), ("llama3.1-70b", 0)):
        path = tmp_path / f"{model}.json"
        args = ["simulate", "--model", model, "--mesh", "h100x16", "--json", str(path)]
        assert main(args) == 0
        assert len(json.loads(path.read_text())["seed_verdicts"]) == claims


@pytest.mark.slow
@pytest.mark.parametrize("model, method", [("dense16", "baseline"), ("llama3.1-70b", "layerwise")])
def test_verify_memory_model_is_within_10_percent_of_xla_peak(tmp_path, model, method):
    # The other two of the four full-size cases (dense16 layer-wise and Llama 70B TP8xPP2 are
    # checked above): the memory model beside XLA's compiled peak per device.
    path = tmp_path / "v.json"
    args = ["verify", "--model", model, "--mesh", "h100x16", "--method", method]
    assert main([*args, "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert abs(doc["predicted_over_xla_peak"] - 1) < 0.10
    assert math.isclose(doc["predicted_state_over_xla"], 1.0, rel_tol=0.01)


@pytest.mark.parametrize("name", ["vllm", "trtllm"])
def test_every_engine_predicts_every_shipped_model_on_every_shipped_mesh(name, capsys):
    from jaxpart.config import shipped

    for model in shipped("models"):
        for mesh in shipped("meshes"):
            args = ["simulate", "--engine", name, "--model", str(model), "--mesh", str(mesh)]
            code = main(args)
            out, err = capsys.readouterr()
            # a model a mesh cannot hold is one line and exit 2; every other one is predicted
            assert code == 0 or (code == 2 and err.count("\n") == 1 and not out), (args, err)
            if code == 0:
                assert f"engine {name}" in out


def test_engine_profiles_say_what_each_engine_does():
    from jaxpart.perf.engines import engines

    e = engines()
    assert set(e) == {"jaxpart", "trtllm", "vllm", "sglang", "fastertransformer", "gptfast"}
    # how each uses a device's memory: vLLM's --gpu-memory-utilization, TensorRT-LLM's
    # free_gpu_memory_fraction, paged KV in the serving engines, jaxpart's whole-context caches
    assert e["vllm"].memory_fraction == 0.9 and e["trtllm"].kv_free_fraction == 0.9
    assert all(e[n].paged_kv and e[n].edge_stages for n in ("vllm", "sglang", "trtllm"))
    assert not e["jaxpart"].paged_kv and not e["jaxpart"].edge_stages
    assert e["jaxpart"].allreduce_bytes == 4 and not e["jaxpart"].head_split
    assert e["gptfast"].head_split is False and e["vllm"].head_split is True
    assert e["fastertransformer"].schedule == "flushed"
    assert all(x.allreduce_bytes == 0 for n, x in e.items() if n != "jaxpart")


def test_a_flushed_pipeline_pays_every_stage_for_every_token():
    # Two stages of 8 layers; a pipelined engine keeps the pipe full (a token a period after
    # warm-up), FasterTransformer's schedule passes each token through both stages in turn and
    # runs a batch PP does not divide as one microbatch.
    from dataclasses import replace as with_

    from jaxpart.perf.predict import tick, with_engine

    cfg = load_model("dense16-tiny")
    mesh = load_mesh("cpu16")
    shape = RunShape(8, 16, 9, microbatches=2)
    plan = make_plan(cfg, mesh, shape, "hbm", strategy="manual", layers_per_stage=[8, 8], devices=2)
    ft = engine("fastertransformer")
    piped = with_(ft, schedule="pipelined")
    c = constants()
    steps, S = 8, 2
    # the engine's fitted costs (per kernel, all-reduce, step) in place of the mesh's
    dec = tick(cfg, plan, with_engine(c, ft), 4, 1, 16 + steps / 2, prefill=False, engine=piped)
    p = predict("x", cfg, plan, c, shape, engine=piped)
    assert p.tpot_ms == pytest.approx(1e3 * ((steps - 1) * 2 + 2 + S - 1) * dec.seconds(2) / steps)
    f = predict("x", cfg, plan, c, shape, engine=ft)  # 8 rows / 2 stages: 2 microbatches
    assert f.microbatches == 2
    assert f.tpot_ms == pytest.approx(1e3 * steps * (2 + S - 1) * dec.seconds(2) / steps)
    odd = predict("x", cfg, plan, c, RunShape(9, 16, 9, microbatches=1), engine=ft)
    assert odd.microbatches == 1  # 9 rows: PP does not divide them, one microbatch


def test_an_engines_fitted_costs_replace_the_mesh_figures():
    from dataclasses import replace as with_

    from jaxpart.perf.predict import ring_steps_s, tensor_allreduce_s, with_engine

    c = constants(launch_s=4e-6, step_s=6e-5)
    ft = engine("fastertransformer")
    assert ft.fitted_keys and set(ft.fitted) == set(ft.fitted_keys)
    paid = with_engine(c, ft)
    assert paid.launch_s == ft.kernel_s and paid.step_s == ft.step_s
    assert paid.intra_host.allreduce_latency_s == ft.allreduce_s
    # a ring of t devices pays 2(t - 1) steps beside the link's latency and bandwidth
    assert ring_steps_s(8, paid) == pytest.approx(14 * ft.allreduce_step_s)
    assert tensor_allreduce_s(1e6, 8, paid) == pytest.approx(
        allreduce_s(1e6, 8, paid.intra_host) + 14 * ft.allreduce_step_s
    )
    assert with_engine(c, engine("jaxpart")) == with_(c, allreduce_step_s=0.0, seq_step_s=0.0)
    # a per-sequence step cost grows the decode time by steps x sequences of a replica
    cfg = load_model("dense16-tiny")
    shape = RunShape(8, 16, 9, microbatches=1)
    plan = make_plan(cfg, load_mesh("cpu16"), shape, "hbm", devices=1)
    base = with_(ft, seq_step_s=0.0)
    slow = with_(ft, seq_step_s=1e-4)
    a, b = (predict("x", cfg, plan, c, shape, engine=e) for e in (base, slow))
    assert b.tpot_ms - a.tpot_ms == pytest.approx(1e3 * 1e-4 * 8)


@pytest.mark.parametrize(
    "text, words",
    [
        ("kernel_us = -1", "fitted.kernel_us = -1"),
        ("kernel_us = 'x'", "fitted.kernel_us = 'x'"),
        ("launch_us = 3", "fitted.launch_us: unknown"),
    ],
)
def test_a_bad_fitted_table_is_a_one_line_error(text, words):
    import tomllib

    from jaxpart.config import ConfigError
    from jaxpart.perf.engines import _fitted

    with pytest.raises(ConfigError, match=words.replace("'", ".")):
        _fitted("engines.toml", "x", tomllib.loads(text))


def test_a_window_caps_what_a_decode_step_reads():
    # A step attends to at most its layer's window: every layer windowed reads less than none,
    # and half the layers windowed lands between (the mean over the model's layers).
    cfg = load_model("dense16-tiny")
    shape = RunShape(8, 200, 9, microbatches=1)
    mesh = load_mesh("cpu16")
    plan = make_plan(cfg, mesh, shape, "hbm", devices=1)
    c = constants()
    n = cfg.n_layers

    def attention(model):
        return predict("x", model, plan, c, shape).decode_tick.attention_us

    full = attention(cfg)
    every = attention(cfg.replace(sliding_window=16))
    half = attention(cfg.replace(layer_windows=(16, 0) * (n // 2)))
    assert every < half < full
