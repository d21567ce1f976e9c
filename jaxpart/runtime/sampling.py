"""Choosing the next token inside the compiled programs: greedy, or temperature / top-k / top-p
sampling with a key that depends only on (seed, sequence, token index)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpart.config.generation import GenerationConfig


def token_keys(seed: int, sequences: jax.Array, step) -> jax.Array:
    """One key per row: fold_in(fold_in(key(seed), sequence), step)."""
    base = jax.random.key(seed)
    steps = jnp.broadcast_to(jnp.asarray(step, jnp.int32), sequences.shape)
    return jax.vmap(lambda i, t: jax.random.fold_in(jax.random.fold_in(base, i), t))(
        sequences, steps
    )


def filtered(logits: jax.Array, g: GenerationConfig) -> jax.Array:
    """``logits [b, V]`` / temperature, with what top-k and top-p rule out set to -inf."""
    x = logits.astype(jnp.float32) / g.temperature
    if g.top_k and g.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, g.top_k)[0][:, -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if g.top_p < 1:
        ordered = jnp.sort(x, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above
        kept = jnp.where(before < g.top_p, ordered, jnp.inf)  # the first always stays
        x = jnp.where(x < kept.min(axis=-1, keepdims=True), -jnp.inf, x)
    return x


def choose(logits: jax.Array, sequences: jax.Array, step, g: GenerationConfig) -> jax.Array:
    """The next token of each row: argmax at temperature 0, else a draw from the filtered
    distribution with the row's (seed, sequence, step) key. ``sequences [b]``: the rows' indices
    in the whole batch; ``step``: the index of the token being chosen (the prefill's is 0)."""
    if g.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    keys = token_keys(g.seed, sequences, step)
    x = filtered(logits, g)
    return jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)


def stopped(tokens: jax.Array, g: GenerationConfig) -> jax.Array:
    """Which of ``tokens`` are stop tokens."""
    if not g.stop_tokens:
        return jnp.zeros(tokens.shape, bool)
    return jnp.isin(tokens, jnp.asarray(g.stop_tokens, jnp.int32))
