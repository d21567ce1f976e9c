"""Partitioners: properties over random inputs (hypothesis), brute force, and the anchors' bugs."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpart.config import ConfigError, RunShape, default_run, load_mesh, load_model
from jaxpart.planning.partition import (
    LayerTooLarge,
    PlanError,
    bottleneck,
    plan_balanced,
    plan_greedy,
    plan_manual,
)
from jaxpart.planning.plan import Plan, device_overhead, make_plan

MANY = settings(max_examples=1000, deadline=None)


def all_partitions(n_layers):
    """Every split of range(n_layers) into contiguous, non-empty stages."""
    for cuts in itertools.product((False, True), repeat=n_layers - 1):
        stages, current = [], [0]
        for i, cut in enumerate(cuts, start=1):
            if cut:
                stages.append(current)
                current = []
            current.append(i)
        stages.append(current)
        yield stages


def assert_valid(stages, n_layers):
    assert [i for s in stages for i in s] == list(range(n_layers)), "every layer once, in order"
    assert all(len(s) > 0 for s in stages), "no empty stage"
    for s in stages:
        assert s == list(range(s[0], s[-1] + 1)), "contiguous"


layers = st.lists(st.integers(0, 100), min_size=1, max_size=9)
big_layers = st.lists(st.integers(0, 10**12), min_size=1, max_size=200)


@MANY
@given(layers, st.integers(0, 400))
def test_greedy_is_minimal(layer_bytes, capacity):
    if max(layer_bytes) > capacity:
        with pytest.raises(LayerTooLarge) as e:
            plan_greedy(layer_bytes, capacity)
        assert layer_bytes[e.value.layer] > capacity
        return
    stages = plan_greedy(layer_bytes, capacity)
    assert_valid(stages, len(layer_bytes))
    assert bottleneck(stages, layer_bytes) <= capacity
    fewest = min(
        len(p) for p in all_partitions(len(layer_bytes)) if bottleneck(p, layer_bytes) <= capacity
    )
    assert len(stages) == fewest


@MANY
@given(big_layers, st.integers(1, 10**13))
def test_greedy_valid_at_scale(layer_bytes, capacity):
    capacity = max(capacity, max(layer_bytes))
    stages = plan_greedy(layer_bytes, capacity)
    assert_valid(stages, len(layer_bytes))
    assert bottleneck(stages, layer_bytes) <= capacity
    # Greedy closes a stage only when the next layer would overflow it.
    for a, b in itertools.pairwise(stages):
        assert sum(layer_bytes[i] for i in a) + layer_bytes[b[0]] > capacity


@MANY
@given(layers, st.data())
def test_balanced_is_optimal(layer_bytes, data):
    n = data.draw(st.integers(1, len(layer_bytes)))
    stages = plan_balanced(layer_bytes, n)
    assert_valid(stages, len(layer_bytes))
    assert len(stages) == n
    best = min(bottleneck(p, layer_bytes) for p in all_partitions(len(layer_bytes)) if len(p) == n)
    assert bottleneck(stages, layer_bytes) == best


@MANY
@given(big_layers, st.data())
def test_balanced_valid_at_scale(layer_bytes, data):
    n = data.draw(st.integers(1, len(layer_bytes)))
    stages = plan_balanced(layer_bytes, n)
    assert_valid(stages, len(layer_bytes))
    assert len(stages) == n
    total = sum(layer_bytes)
    assert bottleneck(stages, layer_bytes) >= max(max(layer_bytes), -(-total // n))
    assert bottleneck(stages, layer_bytes) <= -(-total // n) + max(layer_bytes)


# The anchors' bug reports, as explicit cases.


def test_uniform_layers_into_fewer_stages_no_empty_stage():
    # DeepSpeed #4312 / #5078: uniform partitioning produced empty stages.
    for n_layers, n_stages in [(16, 5), (16, 15), (7, 7), (10, 3), (5, 4)]:
        stages = plan_balanced([1] * n_layers, n_stages)
        assert len(stages) == n_stages and all(stages)
        sizes = sorted(len(s) for s in stages)
        assert sizes[-1] == -(-n_layers // n_stages)


def test_no_layer_dropped():
    # Megatron #1304: layers silently dropped when they do not divide the stages.
    for n_layers in range(1, 20):
        for n_stages in range(1, n_layers + 1):
            stages = plan_balanced([3] * n_layers, n_stages)
            assert_valid(stages, n_layers)


def test_remainder_not_dumped_on_last_stage():
    # PiPPy: the remainder of an uneven division all went to the last stage.
    stages = plan_balanced([1] * 18, 4)
    assert [len(s) for s in stages] in (
        [5, 5, 4, 4],
        [5, 4, 5, 4],
        [4, 5, 5, 4],
        [5, 4, 4, 5],
        [4, 5, 4, 5],
        [4, 4, 5, 5],
    )
    assert max(len(s) for s in stages) == 5


def test_heavy_first_and_last_layer():
    layer_bytes = [10, 1, 1, 1, 1, 1, 1, 10]
    stages = plan_balanced(layer_bytes, 3)
    assert bottleneck(stages, layer_bytes) == 10
    assert stages[0] == [0] and stages[-1] == [7]
    assert plan_greedy(layer_bytes, 10) == [[0], [1, 2, 3, 4, 5, 6], [7]]


def test_more_stages_than_layers_is_an_error():
    with pytest.raises(PlanError, match="stages = 5"):
        plan_balanced([1, 1, 1], 5)


def test_manual_validation():
    assert plan_manual([3, 5, 4, 4], 16)[1] == [3, 4, 5, 6, 7]
    with pytest.raises(PlanError, match="sums to 12"):
        plan_manual([3, 5, 4], 16)
    with pytest.raises(PlanError, match="stage 1 has 0 layers"):
        plan_manual([3, 0, 13], 16)


# make_plan on the shipped configs.


def test_seed_stated_one_layer_per_stage():
    plan = make_plan(
        load_model("dense16"),
        load_mesh("h100x16"),
        default_run("dense16"),
        "14.73GB",
        figures="stated",
    )
    assert plan.layers_per_stage == [1] * 16
    assert plan.n_devices == 16 and plan.data_parallel == 1
    assert all(s.bytes == 14_730_000_000 for s in plan.stages)


def test_seed_stated_two_layers_per_stage():
    plan = make_plan(
        load_model("dense16"),
        load_mesh("h100x16"),
        default_run("dense16"),
        "29.46GB",
        figures="stated",
    )
    assert plan.layers_per_stage == [2] * 8
    assert plan.data_parallel == 2 and plan.n_devices == 16


def test_dense16_l2_fits_one_layer_per_stage_in_l2():
    plan = make_plan(
        load_model("dense16-l2"), load_mesh("h100x16"), default_run("dense16-l2"), "l2"
    )
    assert plan.layers_per_stage == [1] * 16 and plan.split == 1
    assert {s.tier for s in plan.stages} == {"l2"}


def test_dense16_in_l2_needs_a_split_and_too_many_devices():
    with pytest.raises(PlanError, match=r"16 stages x 8 devices = 128 devices.*mesh has 16"):
        make_plan(load_model("dense16"), load_mesh("h100x16"), default_run("dense16"), "l2")
    plan = make_plan(
        load_model("dense16"), load_mesh("h100x16"), default_run("dense16"), "l2", devices=128
    )
    assert plan.split == 8 and plan.n_stages == 16
    assert plan.stages[3].devices == tuple(range(24, 32))


def test_fewer_stages_than_devices_falls_back_to_balanced():
    # dense16-tiny at hbm fits in one stage; 16 devices over 1 stage replicate 16x, but
    # 12 devices with 5 stages would not divide: greedy at 4 layers per stage -> fallback.
    model, mesh, run = load_model("dense16-tiny"), load_mesh("cpu16"), default_run("dense16-tiny")
    plan = make_plan(model, mesh, run, "hbm")
    assert plan.n_stages == 1 and plan.data_parallel == 16
    layer = plan.layer_bytes[0]
    # Room for 3 layers beside the device's own part at the plan's microbatch (16 / 8 = 2 rows)
    room = 3 * layer + device_overhead(model, mesh, run, 1, 2) + 1
    plan = make_plan(model, mesh, run, str(room), devices=7)
    assert plan.n_stages == 7 and plan.strategy == "greedy"
    assert any("fell back to balanced over 7 stages" in n for n in plan.notes)
    assert max(plan.layers_per_stage) == 3


def test_cpu_default_plan_uses_every_device():
    plan = make_plan(load_model("dense16-tiny"), load_mesh("cpu16"), default_run("dense16-tiny"))
    assert plan.n_devices == 16 and plan.layers_per_stage == [1] * 16


def test_manual_and_balanced_plans():
    model, mesh, run = load_model("dense16-tiny"), load_mesh("cpu16"), default_run("dense16-tiny")
    plan = make_plan(model, mesh, run, "hbm", strategy="manual", layers_per_stage=[3, 5, 4, 4])
    assert plan.layers_per_stage == [3, 5, 4, 4] and plan.data_parallel == 4
    plan = make_plan(model, mesh, run, "hbm", strategy="balanced", devices=5)
    assert sorted(plan.layers_per_stage) == [3, 3, 3, 3, 4]


def test_plan_json_round_trip():
    plan = make_plan(
        load_model("dense16"), load_mesh("h100x16"), default_run("dense16"), "l2", devices=128
    )
    again = Plan.from_json(plan.to_json())
    assert again == plan
    d = plan.to_dict()
    assert d["capacity_bytes"] == 50 * 2**20 and len(d["layer_bytes"]) == 16
    assert set(d["stages"][0]) >= {"layers", "devices", "split", "bytes", "tier"}


def test_the_baseline_splits_layers_pp_does_not_divide_as_megatron_does():
    from jaxpart.planning.baseline import baseline_plan, stage_sizes

    assert stage_sizes(44, 3) == [15, 15, 14] and stage_sizes(16, 2) == [8, 8]
    model = load_model("llama3.1-70b").replace(n_layers=44)
    plan = baseline_plan(model, load_mesh("h100x16").sized(24), RunShape(8, 128, 8), 8, 3)
    assert plan.layers_per_stage == [15, 15, 14]
    assert [s.layers[0] for s in plan.stages] == [0, 15, 30] and plan.stages[-1].layers[-1] == 43
    with pytest.raises(ConfigError, match="--pp = 45: more pipeline stages than"):
        baseline_plan(model, load_mesh("h100x16"), RunShape(8, 128, 8), 1, 45)
