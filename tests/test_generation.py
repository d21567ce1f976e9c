"""Generation as users expect it: sampling with per-(seed, sequence, token) keys, stop tokens,
a prompt per sequence, streaming, one GenerationConfig; the same tokens in every placement."""

import numpy as np
import pytest

import jaxpart
from jaxpart.cli import main
from jaxpart.config import ConfigError, RunShape, load_mesh, load_model
from jaxpart.config.generation import GenerationConfig
from jaxpart.model.decoder import init_params
from jaxpart.runtime.engine import generate

MODEL = load_model("dense16-tiny")  # float32
MESH = load_mesh("cpu16")
METHODS = ("reference", "baseline", "layerwise")


@pytest.fixture(scope="module")
def params(cpu16):
    return init_params(MODEL, seed=0)


GREEDY = GenerationConfig()


def _run(method, params, generation=GREEDY, gen_len=12, microbatches=None, **kw):
    shape = RunShape(batch=16, prompt_len=8, gen_len=gen_len, microbatches=microbatches)
    return generate(method, MODEL, MESH, shape, params=params, generation=generation, **kw)


def test_sampling_gives_the_same_tokens_in_every_placement(params):
    g = GenerationConfig(temperature=0.8, top_p=0.9, seed=7)
    runs = {m: _run(m, params, g)[0] for m in METHODS}
    for m in METHODS[1:]:
        np.testing.assert_array_equal(runs[m], runs["reference"], err_msg=m)
    greedy = _run("reference", params)[0]
    assert (runs["reference"] != greedy).mean() > 0.5, "sampling must not be argmax"
    other_seed = _run("reference", params, GenerationConfig(temperature=0.8, top_p=0.9, seed=8))
    assert (other_seed[0] != runs["reference"]).any()


def test_temperature_zero_is_greedy_argmax(params):
    from jaxpart.model.layers import forward_all

    tokens, _, executor = _run("layerwise", params, GenerationConfig(temperature=0.0))
    prompts = np.asarray(jaxpart.runtime.engine.random_prompts(MODEL, RunShape(16, 8, 12), 0))
    whole = np.concatenate([prompts, tokens[:, :-1]], axis=1)
    logits = np.asarray(forward_all(params, whole))  # every position, no cache
    np.testing.assert_array_equal(tokens, logits[:, 7:].argmax(-1))


def test_top_k_1_and_a_tiny_top_p_are_greedy(params):
    greedy = _run("reference", params)[0]
    for g in (
        GenerationConfig(temperature=1.5, top_k=1),
        GenerationConfig(temperature=1.5, top_p=1e-6),
    ):
        np.testing.assert_array_equal(_run("reference", params, g)[0], greedy)


def test_a_key_depends_only_on_seed_sequence_and_token():
    import jax

    from jaxpart.runtime.sampling import token_keys

    a = token_keys(3, jax.numpy.array([0, 5, 9]), 4)
    b = token_keys(3, jax.numpy.array([9, 0]), 4)
    data = jax.random.key_data
    np.testing.assert_array_equal(data(a[2]), data(b[0]))
    np.testing.assert_array_equal(data(a[0]), data(b[1]))
    assert not np.array_equal(data(token_keys(3, jax.numpy.array([9]), 5))[0], data(b[0]))


def test_a_stop_token_ends_its_sequence_and_the_others_go_on(params):
    greedy = _run("reference", params, gen_len=20)[0]
    stop = int(greedy[0, 2])  # row 0's third token
    g = GenerationConfig(stop_tokens=(stop,), pad_token=0)
    for method in METHODS:
        result = _run(method, params, g, gen_len=20)
        tokens, lengths = result[0], result.lengths
        for i, row in enumerate(greedy):
            hits = np.flatnonzero(row == stop)
            n = hits[0] + 1 if hits.size else 20
            assert lengths[i] == n, (method, i)
            np.testing.assert_array_equal(tokens[i, :n], row[:n])
            assert (tokens[i, n:] == 0).all()
        assert lengths.min() <= 3 and lengths.max() == 20, "some stop, some go on"
        # TPS counts what the decode steps generated, not the padding after a stop
        assert result.generation.decode_tokens == int((lengths - 1).sum())


def test_decoding_ends_early_when_every_sequence_has_stopped(params):
    greedy = _run("reference", params, gen_len=40)[0]
    everything = tuple(int(t) for t in np.unique(greedy[:, 1]))  # every row stops at token 2
    for method in METHODS:
        full = _run(method, params, GenerationConfig(chunk=8), gen_len=40).generation
        early = _run(method, params, GenerationConfig(stop_tokens=everything, chunk=8), gen_len=40)
        assert full.decode_calls == 5 and full.decode_steps == 39
        assert early.generation.decode_calls == 1 and early.generation.decode_steps == 8
        assert (early.lengths <= 2).all()


def test_prompts_of_different_lengths_get_what_they_get_alone(params):
    rng = np.random.default_rng(1)
    lens = [3, 40, 7, 12, 25, 5, 33, 18]
    prompts = [rng.integers(0, MODEL.vocab, n).tolist() for n in lens]
    alone = np.concatenate([_run("reference", params, prompts=[p], gen_len=12)[0] for p in prompts])
    for method in METHODS:
        batched = _run(method, params, prompts=prompts, gen_len=12, microbatches=None)[0]
        np.testing.assert_array_equal(batched, alone, err_msg=method)


def test_streaming_hands_over_the_tokens_in_order(params):
    g = GenerationConfig(temperature=0.8, top_k=20, seed=1, chunk=4)
    whole = _run("layerwise", params, g)[0]
    chunks = []
    streamed = _run("baseline", params, g, on_tokens=chunks.append)[0]
    assert [c.shape[1] for c in chunks] == [1, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), whole)
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"temperature": -1.0}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_k": -2}, "--top-k"),
        ({"seed": -1}, "--seed"),
        ({"stop_tokens": (-3,)}, "--stop-tokens"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"chunk": 0}, "--chunk"),
    ],
)
def test_bad_generation_settings_are_named(changes, flag):
    with pytest.raises(ConfigError, match=flag):
        GenerationConfig(**changes)


def test_cli_samples_stops_reads_prompt_files_and_shows(capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("[5, 17, 42]\n[1, 2]\n\n[9, 9, 9, 9, 9]\n")
    path = tmp_path / "g.json"
    args = ["generate", "--model", "dense16-tiny", "--mesh", "cpu16", "--prompts", str(prompts)]
    args += ["--temperature", "0.8", "--top-p", "0.9", "--stop-tokens", "3,4", "--show", "2"]
    assert main([*args, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sampled at temperature 0.8, top-p 0.9" in out and "stop tokens [3, 4]" in out
    assert "sequence 1:" in out and "sequence 2:" not in out and "1 more sequences" in out
    import json

    doc = json.loads(path.read_text())
    assert len(doc["tokens"]) == 3 and len(doc["lengths"]) == 3
    assert main(["generate", "--model", "dense16-tiny", "--mesh", "cpu16", "--top-p", "2"]) == 2
    assert "--top-p = 2.0" in capsys.readouterr().err
