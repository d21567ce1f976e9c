"""Reference, TP x PP baseline and layer-wise pipeline generate the same tokens on 16 simulated
CPU devices (dense16-tiny, float32), and close first-step logits in bfloat16."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpart.config import ConfigError, FitDefinition, RunShape, load_mesh, load_model
from jaxpart.model.decoder import DenseDecoder, init_params
from jaxpart.model.kernels.backend import KernelChoice
from jaxpart.planning.memory import layer_fit_bytes
from jaxpart.planning.placement import PlanChoice
from jaxpart.planning.plan import device_overhead, make_plan
from jaxpart.runtime.engine import generate, make_executor, random_prompts
from jaxpart.runtime.executors import PipelineExecutor, ReferenceExecutor

MODEL = load_model("dense16-tiny")
MESH = load_mesh("cpu16")
RUN = RunShape(16, 16, 16)  # dense16-tiny's [run] table


@pytest.fixture(scope="module")
def params(cpu16):
    return init_params(MODEL, seed=0)


def run_all(params, batch, microbatches, seed=0, dtype=None):
    cfg = MODEL if dtype is None else MODEL.with_dtype(dtype)
    p = params if dtype is None else init_params(cfg, seed=0)
    shape = RunShape(batch, 16, 16, microbatches)
    prompts = random_prompts(cfg, shape, seed)
    out = {}
    for method in ("reference", "baseline", "layerwise"):
        out[method] = generate(method, cfg, MESH, shape, prompts=prompts, params=p)
    return out


@pytest.mark.parametrize("batch, microbatches", [(16, None), (32, 8)])
def test_three_methods_generate_identical_tokens(params, batch, microbatches):
    out = run_all(params, batch, microbatches)
    ref = out["reference"][0]
    assert ref.shape == (batch, 16)
    for method in ("baseline", "layerwise"):
        tokens, _, executor = out[method]
        np.testing.assert_array_equal(tokens, ref, err_msg=method)
    assert out["baseline"][2].plan.split == 8 and out["baseline"][2].plan.n_stages == 2
    assert out["layerwise"][2].plan.n_stages == 16
    # The tokens are not trivially constant: different sequences continue differently.
    assert len({tuple(r) for r in ref.tolist()}) > batch // 2


def test_bfloat16_first_step_logits_agree(params):
    out = run_all(params, 16, None, dtype="bfloat16")
    ref = out["reference"][1]
    assert np.abs(ref).max() < 8
    for method in ("baseline", "layerwise"):
        # Tolerance 1/16: logits are O(1) (|max| < 8, where a bf16 ulp is 1/32 at most, 1/64
        # below 4). The residual stream is rounded to bf16 after each of the 32 sub-blocks, and
        # the tensor split reorders the f32 sums feeding each rounding, so a few ulps of drift
        # are expected; a wrong layer order or cache position gives errors of order 1.
        np.testing.assert_allclose(out[method][1], ref, atol=1 / 16, rtol=0, err_msg=method)


def plan_3544(capacity):
    return make_plan(MODEL, MESH, RUN, capacity, "manual", layers_per_stage=[3, 5, 4, 4])


@pytest.mark.parametrize(
    "capacity, split",
    [
        ("hbm", 1),
        # Five layers fit only when split two ways: a stage then spans 2 devices, with the
        # device's own part (embedding, head, a microbatch of 2 rows' activations) beside them.
        (
            str(
                5 * layer_fit_bytes(MODEL, RUN, FitDefinition.EVERYTHING, 2)
                + device_overhead(MODEL, MESH, RUN, 2, 2)
            ),
            2,
        ),
    ],
)
def test_non_uniform_and_split_plans(params, capacity, split):
    plan = plan_3544(capacity)
    assert plan.layers_per_stage == [3, 5, 4, 4] and plan.split == split
    shape = RunShape(32, 16, 8, 4)
    prompts = random_prompts(MODEL, shape, 3)
    ref = ReferenceExecutor(MODEL, shape)
    expected, _ = ref.generate(ref.place(params), prompts)
    executor = PipelineExecutor(MODEL, plan, shape)
    tokens, _ = executor.generate(executor.place(params), prompts)
    np.testing.assert_array_equal(tokens, expected)
    assert executor.padding_fraction == pytest.approx(1 - 16 / 20)


def collectives(hlo: str, op: str) -> list[str]:
    return [line for line in hlo.splitlines() if re.search(rf"= \S+ {op}(-start)?\(", line)]


def test_hlo_layerwise_permutes_and_never_all_reduces(params):
    _, _, executor = generate("layerwise", MODEL, MESH, RunShape(16, 16, 4), params=params)
    hlo = executor.lowered_decode_text()
    permutes = collectives(hlo, "collective-permute")
    assert permutes and "{15,0}" in "".join(permutes), "the ring from the last stage to stage 0"
    assert collectives(hlo, "all-reduce") == []


def test_hlo_baseline_all_reduces_over_tensor(params):
    _, _, executor = generate("baseline", MODEL, MESH, RunShape(16, 16, 4), params=params)
    hlo = executor.lowered_decode_text()
    reduces = collectives(hlo, "all-reduce")
    assert len(reduces) == 2, "one psum after attention, one after the MLP"
    assert all("replica_groups={{0,1,2,3,4,5,6,7},{8,9,10,11,12,13,14,15}}" in r for r in reduces)
    assert collectives(hlo, "collective-permute")


def test_nnx_model_prefill_and_decode_step_match_the_reference(params):
    model = DenseDecoder(MODEL, rngs=nnx.Rngs(0))
    prompts = random_prompts(MODEL, RunShape(4, 16, 4), 5)
    tokens = [jnp.argmax(model.prefill(jnp.asarray(prompts)), -1)]
    for _ in range(3):
        tokens.append(jnp.argmax(model.decode_step(tokens[-1]), -1))
    ref = ReferenceExecutor(MODEL, RunShape(4, 16, 4, 1))
    expected, _ = ref.generate(ref.place(params), prompts)
    np.testing.assert_array_equal(np.stack(tokens, 1), expected)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(shape=RunShape(16, 16, 4, 3)), "--batch = 16: must be divisible"),
        (dict(shape=RunShape(16, 16, 60)), "exceeds the model's seq_len = 64"),
        (dict(prompts=np.array([1, 2, 300])), "prompt token 300"),
        (dict(choice=PlanChoice(tp=3)), "--tp = 3: must divide the model's 8 attention heads"),
        (dict(choice=PlanChoice(tp=1, pp=17)), "--pp = 17: more pipeline stages than"),
        (dict(choice=PlanChoice(tp=4, pp=8)), "must divide the 16 devices"),
    ],
)
def test_bad_runs_are_config_errors(params, kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        generate("baseline", MODEL, MESH, **{"shape": RUN, "params": params, **kwargs})


def test_cache_is_sharded_by_stage(params):
    plan = make_plan(MODEL, MESH, RUN)
    executor = PipelineExecutor(MODEL, plan, RunShape(16, 16, 2, 16))
    placed = executor.place(params)
    assert placed["layers"]["w1"].addressable_shards[0].data.shape == (1, 128, 512)
    assert jax.devices()[0] in placed["layers"]["w1"].sharding.device_set
    # The prefill program makes the caches, [heads, layers, batch, positions, head_dim].
    state = executor.prefill(placed, random_prompts(MODEL, RUN, 0))
    k, _ = state.caches
    assert state.generated == 1 and state.first_tokens.shape == (16,)
    assert k.shape == executor.cache_shape() == (8, 16, 16, 64, 16)
    assert len(k.sharding.device_set) == 16
    assert k.addressable_shards[0].data.shape == (8, 1, 16, 64, 16), "one layer per device"


@pytest.mark.parametrize("method", ["reference", "layerwise"])
def test_prefill_and_decode_by_hand_give_generates_tokens(params, method):
    shape = RunShape(16, 16, 5)
    executor = make_executor(method, MODEL, MESH, shape)
    placed = executor.place(params)
    prompts = random_prompts(MODEL, shape, 2)
    tokens, logits = executor.generate(placed, prompts)  # one decode call of 4 steps
    state = executor.prefill(placed, prompts)
    state, a = executor.decode(state, 2)
    state, b = executor.decode(state, 2)  # the same program, from token index 3
    made = np.concatenate([state.first_tokens[:, None], a, b], axis=1)
    np.testing.assert_array_equal(made, tokens)
    np.testing.assert_array_equal(np.asarray(state.first_logits), logits)
    assert state.generated == 5 and not state.ragged
    with pytest.raises(ValueError, match="decode n=1: 5 of gen_len = 5 tokens"):
        executor.decode(state, 1)


def test_long_prompts_attend_in_query_chunks_with_the_same_result(params, monkeypatch):
    # A chunk of 5 queries does not divide the 16-token prompt: the last chunk is padded.
    from jaxpart.model.kernels import attention

    shape = RunShape(4, 16, 4, 1)
    prompts = random_prompts(MODEL, shape, 11)
    whole = ReferenceExecutor(MODEL, shape)
    tokens, logits = whole.generate(whole.place(params), prompts)
    monkeypatch.setattr(attention, "QUERY_CHUNK", 5)
    chunked = ReferenceExecutor(MODEL, shape)
    tokens_c, logits_c = chunked.generate(chunked.place(params), prompts)
    np.testing.assert_array_equal(tokens_c, tokens)
    # Same maths row by row; only XLA's fusion of the smaller blocks may reorder f32 sums.
    np.testing.assert_allclose(logits_c, logits, rtol=0, atol=1e-5)


def test_a_mesh_file_of_another_gpu_is_refused(monkeypatch):
    from types import SimpleNamespace

    from jaxpart.runtime import engine

    a100 = [SimpleNamespace(platform="gpu", device_kind="NVIDIA A100-SXM4-80GB")] * 16
    monkeypatch.setattr(engine.jax, "devices", lambda: a100)
    with pytest.raises(ConfigError) as e:
        engine.check_mesh(load_mesh("h100x16"), 16)
    assert "'NVIDIA H100 80GB HBM3'" in str(e.value) and "'NVIDIA A100-SXM4-80GB'" in str(e.value)
    h100 = [SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")] * 16
    monkeypatch.setattr(engine.jax, "devices", lambda: h100)
    engine.check_mesh(load_mesh("h100x16"), 16)


def test_planning_and_simulate_do_not_import_jax():
    import subprocess
    import sys

    code = (
        "import sys, jaxpart, jaxpart.perf.simulate, jaxpart.planning.placement, "
        "jaxpart.cli.render; "
        "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("backend", ["xla", "pallas"])
def test_grouped_kv_swiglu_tied_model_gives_the_same_tokens_in_every_placement(backend):
    # gqa-tiny: 8 query heads on 2 K/V heads, SwiGLU, tied head, its own rope_theta and
    # norm_eps. TP8 splits past its K/V heads, so each rank holds a copy of its group's head.
    cfg = load_model("gqa-tiny")
    params = init_params(cfg, 3)
    assert "head" not in params and params["layers"]["wk"].shape == (16, 128, 2, 16)
    assert params["layers"]["w3"].shape == (16, 128, 256)
    kernel = KernelChoice(mlp=backend, attention=backend, strict=True)
    shape = RunShape(16, 16, 6)
    prompts = random_prompts(cfg, shape, 4)
    runs = {
        method: generate(method, cfg, MESH, shape, prompts=prompts, params=params, kernel=kernel)
        for method in ("reference", "baseline", "layerwise")
    }
    for method in ("baseline", "layerwise"):
        np.testing.assert_array_equal(runs[method][0], runs["reference"][0], err_msg=method)
    baseline = runs["baseline"][2]
    assert baseline.kv_copies == 4 and baseline.cache_shape()[0] == 8
    # The copies come back out when saving: the canonical layout has the model's 2 K/V heads.
    canonical = baseline.canonical(baseline.place(params))
    np.testing.assert_array_equal(canonical["layers"]["wk"], np.asarray(params["layers"]["wk"]))


def test_rope_theta_and_norm_eps_reach_the_maths():
    cfg = load_model("gqa-tiny")
    params = init_params(cfg, 0)
    shape = RunShape(4, 16, 2)
    prompts = random_prompts(cfg, shape, 1)
    _, base, _ = generate("reference", cfg, MESH, shape, prompts=prompts, params=params)
    for change in (dict(rope_theta=10_000.0), dict(norm_eps=1e-2)):
        other = cfg.replace(**change)
        _, logits, _ = generate("reference", other, MESH, shape, prompts=prompts, params=params)
        assert np.abs(logits - base).max() > 1e-4, change


def test_a_baseline_whose_pp_does_not_divide_the_layers_runs_uneven_stages(params):
    # 12 layers over PP8 (TP2): stages of 2, 2, 2, 2, 1, 1, 1, 1 layers, the same tokens.
    cfg = MODEL.replace(n_layers=12)
    p = {**params, "layers": {k: v[:12] for k, v in params["layers"].items()}}
    shape = RunShape(16, 16, 6)
    prompts = random_prompts(cfg, shape, 2)
    ref, _, _ = generate("reference", cfg, MESH, shape, prompts=prompts, params=p)
    tokens, _, executor = generate(
        "baseline", cfg, MESH, shape, prompts=prompts, params=p, choice=PlanChoice(tp=2, pp=8)
    )
    assert executor.plan.layers_per_stage == [2, 2, 2, 2, 1, 1, 1, 1]
    np.testing.assert_array_equal(tokens, ref)
