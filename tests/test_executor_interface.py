"""The executor interface's shared loop (``Executor.timed_generate``), checked against a numpy
fake (tests/fake_executor.py) with nothing compiled: chunk sizes, tokens handed over in order,
early stop once every sequence has stopped, lengths, and where the timed regions begin and end.
The real executors are held to the same tokens in test_executors.py and test_generation.py."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from fake_executor import DECODE_S, MODEL, PREFILL_S, FakeExecutor, expected_tokens

from jaxpart.config import ConfigError, RunShape
from jaxpart.config.generation import GREEDY, STREAM_CHUNK, GenerationConfig
from jaxpart.runtime.executors import base

PROMPTS = [[5, 17, 42], [1, 2], [9, 9, 9, 9, 9], [7], [3, 1, 4, 1, 5], [2, 7], [8, 8], [6]]


def run(gen_len=40, generation=GREEDY, prompts=PROMPTS, stream=False):
    fake = FakeExecutor(RunShape(len(prompts), 5, gen_len), generation)
    chunks = []
    result = fake.timed_generate(fake.place({}), prompts, chunks.append if stream else None)
    expected = expected_tokens(prompts, gen_len, generation, fake.cfg.vocab)
    return fake, result, chunks, expected


@pytest.mark.parametrize(
    "generation, stream, calls",
    [
        (GenerationConfig(), False, [39]),  # everything in one call
        (GenerationConfig(chunk=8), False, [8, 8, 8, 8, 7]),
        (GenerationConfig(chunk=100), False, [39]),
        (GenerationConfig(), True, [STREAM_CHUNK, STREAM_CHUNK, 39 - 2 * STREAM_CHUNK]),
        # stop tokens that no row emits: chunked, to be able to stop early, but never stopping
        (GenerationConfig(stop_tokens=(10_000,)), False, [16, 16, 7]),
    ],
)
def test_decode_calls_follow_the_generation_config(generation, stream, calls):
    fake, result, _, expected = run(generation=generation, stream=stream)
    assert fake.calls == calls and fake.prefills == 1
    np.testing.assert_array_equal(result.tokens, expected)
    assert result.decode_calls == len(calls) and result.decode_steps == 39
    np.testing.assert_array_equal(result.lengths, np.full(len(PROMPTS), 40))
    assert result.decode_tokens == 39 * len(PROMPTS)


def test_streaming_hands_over_every_token_in_order():
    _, result, chunks, expected = run(gen_len=12, generation=GenerationConfig(chunk=4), stream=True)
    assert [c.shape for c in chunks] == [(8, 1), (8, 4), (8, 4), (8, 3)]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), result.tokens)
    np.testing.assert_array_equal(result.tokens, expected)


def test_decoding_stops_after_the_call_in_which_every_sequence_has_stopped():
    whole = expected_tokens(PROMPTS, 40, GenerationConfig(), MODEL.vocab)
    stops = tuple(int(t) for t in np.unique(whole[:, 5]))  # every row stops by token 5
    g = GenerationConfig(stop_tokens=stops, chunk=2, pad_token=0)
    fake, result, _, expected = run(generation=g)
    np.testing.assert_array_equal(result.tokens, expected)
    lengths = result.lengths
    assert lengths.max() <= 6 and lengths.min() >= 1
    for i, n in enumerate(lengths):
        assert (
            result.tokens[i, n - 1] in stops and not np.isin(result.tokens[i, : n - 1], stops).any()
        )
        assert (result.tokens[i, n:] == 0).all(), "the pad token after a stop"
    # Calls of 2 steps cover token indices 1-2, 3-4, ...: the one holding the last stop ends it.
    last_stop = int(lengths.max()) - 1
    assert fake.calls == [2] * math.ceil(last_stop / 2)
    assert result.decode_steps == 2 * len(fake.calls) < 39
    assert result.decode_tokens == int((lengths - 1).sum())


def test_no_decode_call_when_every_first_token_stops_or_gen_len_is_1():
    first = tuple(
        int(t) for t in expected_tokens(PROMPTS, 1, GenerationConfig(), MODEL.vocab)[:, 0]
    )
    for gen_len, g in ((40, GenerationConfig(stop_tokens=first)), (1, GenerationConfig())):
        fake, result, chunks, expected = run(gen_len=gen_len, generation=g, stream=True)
        assert fake.calls == [] and result.decode_calls == 0 and result.decode_steps == 0
        assert result.decode_s == 0.0 and result.decode_tokens == 0
        assert len(chunks) == 1, "the first tokens are still handed over"
        np.testing.assert_array_equal(result.tokens, expected)
        np.testing.assert_array_equal(result.lengths, np.ones(len(PROMPTS)))


def test_ttft_is_the_prefill_and_decode_time_the_decode_calls(monkeypatch):
    fake = FakeExecutor(RunShape(8, 5, 12), GenerationConfig(chunk=4))
    monkeypatch.setattr(base, "time", SimpleNamespace(perf_counter=fake.now))
    result = fake.timed_generate(fake.place({}), PROMPTS)
    assert fake.calls == [4, 4, 3]
    assert result.prefill_s == PREFILL_S
    assert result.decode_s == 3 * DECODE_S


def test_prefill_and_decode_pass_the_state_in_and_out():
    g = GenerationConfig()
    fake = FakeExecutor(RunShape(8, 5, 12), g)
    placed = fake.place({"w": 1})
    state = fake.prefill(placed, PROMPTS)
    lens = np.array([len(p) for p in PROMPTS])
    assert state.generated == 1 and state.decode_steps == 0 and state.ragged
    assert state.placed is placed
    np.testing.assert_array_equal(state.prompt_lens, lens)
    second, a = fake.decode(state, 3)
    third, b = fake.decode(second, 2)
    assert a.shape == (8, 3) and b.shape == (8, 2)
    assert (state.generated, second.generated, third.generated) == (1, 4, 6)
    expected = expected_tokens(PROMPTS, 12, g, fake.cfg.vocab)
    made = np.concatenate([state.first_tokens[:, None], a, b], axis=1)
    np.testing.assert_array_equal(made, expected[:, :6])
    np.testing.assert_array_equal(third.last_tokens, b[:, -1])
    np.testing.assert_array_equal(third.first_logits.argmax(-1), state.first_tokens)
    # Each row's tokens were fed at its own positions, right after its own prompt.
    positions = third.caches[0]
    for i, prompt in enumerate(PROMPTS):
        fed = positions[i, : len(prompt) + 5]
        np.testing.assert_array_equal(fed, [*prompt, *made[i, :5]])
        assert (positions[i, len(prompt) + 5 :] == -1).all()
    # A state is not changed by decoding from it.
    assert state.generated == 1 and (state.caches[0][:, 5:] == -1).all()
    with pytest.raises(ValueError, match=r"decode n=7: 6 of gen_len = 12 tokens"):
        fake.decode(third, 7)


def test_generate_gives_timed_generates_tokens_and_logits():
    fake = FakeExecutor(RunShape(8, 5, 12), GenerationConfig(chunk=5))
    placed = fake.place({})
    tokens, logits = fake.generate(placed, PROMPTS)
    timed = fake.timed_generate(placed, PROMPTS)
    np.testing.assert_array_equal(tokens, timed.tokens)
    np.testing.assert_array_equal(logits, timed.first_logits)
    assert logits.shape == (8, fake.cfg.vocab)


def test_a_prompt_outside_the_vocab_is_refused_before_any_work():
    fake = FakeExecutor(RunShape(2, 3, 4))
    with pytest.raises(ConfigError, match=r"prompt token 999 at \[1, 2\]"):
        fake.timed_generate(fake.place({}), [[1, 2], [3, 4, 999]])
    with pytest.raises(ConfigError, match="prompt token -1"):
        fake.prefill(fake.place({}), np.array([[1, -1, 2], [0, 0, 0]]))
    assert fake.prefills == 0 and fake.calls == []
