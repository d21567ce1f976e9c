"""The pipeline executor: ``jax.shard_map`` over ``stage`` (and ``tensor``, ``data``), with
``jax.lax.ppermute`` to the next stage. It runs any Plan: the layer-wise plans of the greedy
partitioner and the TP x PP baseline (which is a plan of uniform stages split TP ways).

- Prefill is GPipe: M microbatches through S stages in M + S - 1 ticks.
- Decode is a steady-state pipeline with period P = max(M, S): microbatch m's k-th token enters
  stage 0 at tick k*P + m, so stage s works on microbatch (t - s) mod P. With M >= S the pipe is
  full between warm-up and drain; with M < S, S - M of every S ticks are bubbles. The last stage
  turns its output into the next token and sends it round the ring to stage 0, in the same
  ppermute that carries activations forward; each stage keeps its own layers' KV caches.
- Stages shorter than the longest are padded with skipped layers (``lax.cond``, no compute); what
  they cost is the time they wait for the longest stage (``padding_fraction``).
- The prefill program makes the KV caches itself (nothing outside a program is compiled while a
  run is timed). Split past a model's K/V heads, each tensor rank holds a copy of the one its
  query heads share. Weights may come lazily from a checkpoint (``weights.LAZY_LEAVES``): each
  process then reads only its own devices' blocks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxpart.config import ConfigError, ModelConfig, RunShape
from jaxpart.config.generation import GREEDY, GenerationConfig
from jaxpart.io.weights import LAZY_LEAVES
from jaxpart.model.decoder import abstract_params, leaf_dtype, logical_specs
from jaxpart.model.kernels.backend import AUTO, KernelChoice
from jaxpart.model.layers import arch_of, embed_tokens, jnp_dtype, lm_logits, run_layers
from jaxpart.model.quant import cache_dtype
from jaxpart.planning.memory import cache_positions
from jaxpart.planning.plan import Plan
from jaxpart.runtime.executors.base import DecodeState, Executor, Forced
from jaxpart.runtime.sampling import choose, stopped
from jaxpart.runtime.sharding import (
    build_mesh,
    cache_spec,
    kv_copies,
    padding_fraction,
    param_specs,
    put_global,
    stage_layout,
    to_host,
)


def _pack(y: jax.Array, control: jax.Array) -> jax.Array:
    """Activation and int32 control words in one flat buffer of the activation's dtype."""
    words = jax.lax.bitcast_convert_type(control, y.dtype)  # [n] or [n, 2] for 2-byte dtypes
    return jnp.concatenate([y.reshape(-1), words.reshape(-1)])


def _unpack(buf: jax.Array, shape: tuple[int, ...], n_control: int):
    size = int(np.prod(shape))
    words = buf[size:]
    if buf.dtype.itemsize == 2:
        words = words.reshape(n_control, 2)
    return buf[:size].reshape(shape), jax.lax.bitcast_convert_type(words, jnp.int32)


class PipelineExecutor(Executor):
    """Places a model by ``plan`` on a mesh and generates with the pipeline schedule."""

    def __init__(
        self,
        cfg: ModelConfig,
        plan: Plan,
        shape: RunShape,
        devices=None,
        kernel: KernelChoice = AUTO,
        generation: GenerationConfig = GREEDY,
    ):
        shape.check(cfg)
        shape.check_split(plan.data_parallel, shape.microbatches)
        if plan.model != cfg.name or len(plan.layer_bytes) != cfg.n_layers:
            raise ConfigError(f"plan is for model {plan.model!r}, not {cfg.name!r}")
        self.cfg, self.plan, self.shape, self.kernel = cfg, plan, shape, kernel
        self.generation = generation
        self.mesh = build_mesh(plan, devices)
        self.rows, self.sizes = stage_layout(plan)
        self.n_stages, self.split, self.replicas = plan.n_stages, plan.split, plan.data_parallel
        self.lmax = len(self.rows) // self.n_stages
        self.b_rep = shape.batch // self.replicas
        self.b_mb = self.b_rep // shape.microbatches
        self.period = max(shape.microbatches, self.n_stages)
        self.dtype = jnp_dtype(cfg.dtype)  # activations
        self.kv_dtype = cache_dtype(cfg.kv_dtype)  # FP8: its bytes (quant.FP8_CACHE)
        self.tensor_axis = "tensor" if self.split > 1 else None
        self.arch = arch_of(cfg)
        # Split more ways than it has K/V heads, a model's heads are copied so that each tensor
        # rank holds the one its query heads share (sharding.RULES, "kv_heads").
        self.kv_copies = kv_copies(cfg, plan)
        self._param_specs = param_specs(cfg, plan)
        self._repeats = self._leaf_repeats()
        self._prefill = self._build_prefill()
        self._decodes = {}  # (steps per call, ragged) -> its program, built on first use
        self._forced_decode = None  # built on first use (compare in bf16)

    # -- placement ------------------------------------------------------------------------------

    def _leaf_repeats(self) -> dict[str, dict[int, int]]:
        """Each layer leaf's axes whose canonical entries are repeated on the devices: a K/V
        head copied per rank when split past the heads; the down projection's FP8 block scales
        where the tensor split cuts a block (each block's scale repeated over the groups of
        gcd(block, d_ff / split) inputs that each rank then quantises on its own)."""
        out = {}
        for name, axes in logical_specs(self.cfg)["layers"].items():
            out[name] = {axes.index("kv_heads"): self.kv_copies} if "kv_heads" in axes else {}
        q = self.cfg.quant
        if q is not None and q.group and self.split > 1:
            local = self.cfg.d_ff // self.split
            out["w2_scale"] = {1: q.group // math.gcd(q.group, local)}
        return {k: {a: r for a, r in v.items() if r > 1} for k, v in out.items()}

    def place(self, params: dict) -> dict:
        """Canonical ``[L, ...]`` weights (arrays, or checkpoint leaves read lazily) -> the padded
        stage layout, sharded on the mesh, in the model's weight dtype."""
        placed = {
            k: self._put(v, self._param_specs[k], leaf_dtype(self.cfg, k))
            for k, v in params.items()
            if k != "layers"
        }
        placed["layers"] = {
            k: self._put(
                v, self._param_specs["layers"][k], leaf_dtype(self.cfg, k), True, self._repeats[k]
            )
            for k, v in params["layers"].items()
        }
        placed["sizes"] = self.place_sizes()
        return placed

    def _put(self, leaf, spec, dtype, layered: bool = False, repeats: dict | None = None):
        """One leaf placed block by block: each device's block is taken from the canonical leaf,
        the stage layout's rows and copied K/V heads mapped back to the canonical ones. A
        checkpoint leaf reads only those blocks, so each process reads only its own share."""
        if isinstance(leaf, LAZY_LEAVES):
            read, shape = leaf.read, list(leaf.shape)
        else:
            host = to_host(leaf)
            read, shape = (lambda ids: host[np.ix_(*ids)]), list(host.shape)
        if layered:
            shape[0] = len(self.rows)
        repeats = repeats or {}
        for axis, r in repeats.items():
            shape[axis] *= r

        def block(index):
            ids = []
            for axis, (part, n) in enumerate(zip(index, shape, strict=True)):
                wanted = np.arange(*part.indices(n))
                if layered and axis == 0:
                    wanted = self.rows[wanted]
                if axis in repeats:
                    wanted = wanted // repeats[axis]
                ids.append(wanted)
            return read(ids).astype(dtype)

        array = jax.make_array_from_callback(tuple(shape), NamedSharding(self.mesh, spec), block)
        if isinstance(leaf, LAZY_LEAVES):
            leaf.forget()
        return array

    def place_sizes(self):
        """Each stage's real layer count, on its devices (the executor skips padding rows)."""
        return put_global(self.sizes, NamedSharding(self.mesh, P("stage")))

    def cache_shape(self) -> tuple[int, ...]:
        """The global K (or V) cache: ``[H, S * Lmax, batch, positions, head_dim]``."""
        cfg = self.cfg
        positions = cache_positions(cfg.seq_len)
        heads = cfg.n_kv_heads * self.kv_copies
        return (heads, len(self.rows), self.shape.batch, positions, cfg.head_dim)

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.plan)

    # -- the two programs -----------------------------------------------------------------------

    def _specs(self):
        params = {**self._param_specs, "sizes": P("stage")}
        return params, cache_spec(self.plan)

    def _stage_work(self, params, x, kc, vc, m, pos, active):
        """Run this stage's layers on microbatch m (its rows of the cache), if ``active``."""
        n_valid = params["sizes"][0]
        # this stage's first layer in the model (per-layer windows and RoPE need it)
        starts = [0]
        for n in self.plan.layers_per_stage[:-1]:
            starts.append(starts[-1] + n)
        first = jnp.asarray(starts, jnp.int32)[jax.lax.axis_index("stage")]

        def work(x, kc, vc):
            return run_layers(
                params["layers"],
                x,
                kc,
                vc,
                pos,
                self.tensor_axis,
                n_valid,
                self.kernel,
                row=m * self.b_mb,
                arch=self.arch,
                first_layer=first,
            )

        return jax.lax.cond(active, work, lambda *a: a, x, kc, vc)

    def _sequences(self, m) -> jax.Array:
        """The batch indices of microbatch m's rows on this data replica (batch order)."""
        r = jax.lax.axis_index("data")
        return r * self.b_rep + m * self.b_mb + jnp.arange(self.b_mb)

    def _next_token(self, params, y_last, produce, m, step, greedy: bool = False):
        """The next token (and its f32 logits) on the last stage, by the generation config (or
        argmax when ``greedy``); zeros elsewhere."""
        vocab = self.cfg.vocab
        g = GREEDY if greedy else self.generation

        def head(y):
            logits = lm_logits(params, y, self.arch)
            return choose(logits, self._sequences(m), step, g), logits

        def skip(y):
            return jnp.zeros((self.b_mb,), jnp.int32), jnp.zeros((self.b_mb, vocab), jnp.float32)

        return jax.lax.cond(produce, head, skip, y_last)

    def _build_prefill(self):
        S, M, b_mb, d = self.n_stages, self.shape.microbatches, self.b_mb, self.cfg.d_model
        T, vocab = self.shape.prompt_len, self.cfg.vocab
        forward = [(j, j + 1) for j in range(S - 1)]

        heads, _, _, positions, head_dim = self.cache_shape()  # K/V heads, copies included
        local_cache = (heads // self.split, self.lmax, self.b_rep, positions, head_dim)

        def body(params, prompts, lens):
            s = jax.lax.axis_index("stage")
            tokens = prompts.reshape(M, b_mb, T)
            last = lens.reshape(M, b_mb) - 1  # each row's last prompt position
            # The caches are made here, inside the program: no allocation outside it to compile.
            kc = jnp.zeros(local_cache, self.kv_dtype)
            vc = jnp.zeros(local_cache, self.kv_dtype)

            def tick(i, carry):
                state, kc, vc, toks, logits = carry
                m = i - s
                active = (m >= 0) & (m < M)
                m = jnp.clip(m, 0, M - 1)
                batch_i = tokens[jnp.clip(i, 0, M - 1)]
                first = embed_tokens(params, batch_i, self.dtype, self.arch)
                x = jnp.where(s == 0, first, state)
                y, kc, vc = self._stage_work(params, x, kc, vc, m, 0, active)
                produce = active & (s == S - 1)
                y_last = y[jnp.arange(b_mb), last[m]]
                tok, lg = self._next_token(params, y_last, produce, m, 0)
                toks = jnp.where(produce, toks.at[m].set(tok), toks)
                logits = jnp.where(produce, logits.at[m].set(lg), logits)
                state = jax.lax.ppermute(y, "stage", forward) if S > 1 else y
                return state, kc, vc, toks, logits

            init = (
                jnp.zeros((b_mb, T, d), self.dtype),
                kc,
                vc,
                jnp.zeros((M, b_mb), jnp.int32),
                jnp.zeros((M, b_mb, vocab), jnp.float32),
            )
            _, kc, vc, toks, logits = jax.lax.fori_loop(0, M + S - 1, tick, init)
            return toks[None], logits[None], kc, vc

        pspec, cspec = self._specs()
        fn = jax.shard_map(
            body,
            mesh=self.mesh,
            in_specs=(pspec, P("data", None), P("data")),
            out_specs=(P("stage", None, "data"), P("stage", None, "data", None), cspec, cspec),
            check_vma=False,  # Pallas calls (interpret mode) fail the vma check on jax 0.10
        )
        return jax.jit(fn)

    def _build_decode(self, steps: int, teacher_forced: bool = False, ragged: bool = False):
        """The program for ``steps`` decode steps from token index ``start`` (an input): row j
        of microbatch m is fed at position lens[j] + start + k (``ragged``; else every row at
        prompt_len + start + k, one cache write for all); a row already stopped emits the pad
        token. ``teacher_forced``: the last stage sends round the ring the token it is given
        for each step (the reference's), not its own choice (argmax), and also returns, for every
        step, its top logit and its logit at the given token."""
        S, M, b_mb = self.n_stages, self.shape.microbatches, self.b_mb
        D, Pd, g = steps, self.period, self.generation
        ring = [(j, (j + 1) % S) for j in range(S)]
        n_ticks = (D - 1) * Pd + M + S - 1

        def body(params, first_tokens, forced, kc, vc, lens, done, start):
            s = jax.lax.axis_index("stage")
            forced = forced.reshape(D, M, b_mb) if teacher_forced else None
            lens = lens.reshape(M, b_mb)

            def tick(t, carry):
                act, token_buf, kc, vc, out, top, at, done = carry
                u = t - s
                k, m = u // Pd, u % Pd
                active = (u >= 0) & (m < M) & (k < D)
                m, k = jnp.minimum(m, M - 1), jnp.clip(k, 0, D - 1)
                first = embed_tokens(params, token_buf[m], self.dtype, self.arch)[:, None, :]
                x = jnp.where(s == 0, first, act)
                pos = (lens[m] if ragged else self.shape.prompt_len) + start + k
                y, kc, vc = self._stage_work(params, x, kc, vc, m, pos, active)
                produce = active & (s == S - 1)
                tok, logits = self._next_token(
                    params, y[:, 0], produce, m, start + k + 1, greedy=teacher_forced
                )
                tok = jnp.where(done[m], g.pad_token, tok)
                done = jnp.where(produce, done.at[m].set(done[m] | stopped(tok, g)), done)
                out = jnp.where(produce, out.at[k, m].set(tok), out)
                if teacher_forced:
                    tok = forced[k, m]
                    given = jnp.take_along_axis(logits, tok[:, None], axis=1)[:, 0]
                    top = jnp.where(produce, top.at[k, m].set(logits.max(axis=-1)), top)
                    at = jnp.where(produce, at.at[k, m].set(given), at)
                # One transfer a tick: the activation with the token, its microbatch and a flag
                # packed behind it (a collective costs far more than its bytes on CPU meshes).
                control = jnp.concatenate([tok, jnp.stack([m, produce.astype(jnp.int32)])])
                message = _pack(y, control)
                if S > 1:
                    message = jax.lax.ppermute(message, "stage", ring)
                act, control = _unpack(message, y.shape, control.shape[0])
                r_tok, r_m, r_new = control[:-2], control[-2], control[-1] == 1
                token_buf = jnp.where((s == 0) & r_new, token_buf.at[r_m].set(r_tok), token_buf)
                return act, token_buf, kc, vc, out, top, at, done

            scores = jnp.zeros((D, M, b_mb) if teacher_forced else (0,), jnp.float32)
            init = (
                jnp.zeros((b_mb, 1, self.cfg.d_model), self.dtype),
                first_tokens.reshape(M, b_mb),
                kc,
                vc,
                jnp.zeros((D, M, b_mb), jnp.int32),
                scores,
                scores,
                done.reshape(M, b_mb),
            )
            _, _, kc, vc, out, top, at, done = jax.lax.fori_loop(0, n_ticks, tick, init)
            if teacher_forced:
                return out[None], top[None], at[None]
            return out[None], done[None], kc, vc

        pspec, cspec = self._specs()
        steps_spec, rows = P("stage", None, None, "data"), P("data")
        if teacher_forced:
            fn = jax.shard_map(
                lambda params, first, forced, kc, vc, lens: body(
                    params, first, forced, kc, vc, lens, jnp.zeros(first.shape, bool), 0
                ),
                mesh=self.mesh,
                in_specs=(pspec, rows, P(None, "data"), cspec, cspec, rows),
                out_specs=(steps_spec, steps_spec, steps_spec),
                check_vma=False,
            )
            return jax.jit(fn)
        fn = jax.shard_map(
            lambda params, first, kc, vc, lens, done, start: body(
                params, first, None, kc, vc, lens, done, start
            ),
            mesh=self.mesh,
            in_specs=(pspec, rows, cspec, cspec, rows, rows, P()),
            out_specs=(steps_spec, P("stage", None, "data"), cspec, cspec),
            check_vma=False,  # Pallas calls (interpret mode) fail the vma check on jax 0.10
        )
        return jax.jit(fn, donate_argnums=(2, 3))

    def decode_program(self, steps: int, ragged: bool = False):
        """The compiled-on-first-use program for ``steps`` decode steps a call (``ragged``:
        prompts of different lengths, each row at its own position)."""
        if (steps, ragged) not in self._decodes:
            self._decodes[steps, ragged] = self._build_decode(steps, ragged=ragged)
        return self._decodes[steps, ragged]

    # -- running ---------------------------------------------------------------------------------

    def _batch_order(self, x: np.ndarray) -> np.ndarray:
        """[M, replicas * b_mb, ...] (microbatch-major per replica) -> [batch, ...]."""
        M = self.shape.microbatches
        x = x.reshape(M, self.replicas, self.b_mb, *x.shape[2:])
        return np.swapaxes(x, 0, 1).reshape(self.shape.batch, *x.shape[3:])

    def _rows(self, x: np.ndarray) -> jax.Array:
        """A per-sequence host array ``[B]`` on the mesh, split over the replicas."""
        return put_global(np.asarray(x), NamedSharding(self.mesh, P("data")))

    def prefill_padded(self, placed, prompts: np.ndarray, lens: np.ndarray) -> DecodeState:
        """The prefill program on prompts ``[B, T]`` padded on the right to ``lens [B]``: the
        caches it makes (sharded by stage) and the first tokens and logits, on the host in
        batch order."""
        if prompts.shape != (self.shape.batch, self.shape.prompt_len):
            raise ConfigError(
                f"prompts of shape {list(prompts.shape)}: this executor's programs are built for "
                f"[batch, prompt_len] = [{self.shape.batch}, {self.shape.prompt_len}]; build one "
                "for this run shape"
            )
        on_mesh = put_global(
            np.asarray(prompts, np.int32), NamedSharding(self.mesh, P("data", None))
        )
        lens_on_mesh = self._rows(np.asarray(lens, np.int32))
        toks, logits, k, v = self._prefill(placed, on_mesh, lens_on_mesh)
        return DecodeState.after_prefill(
            placed,
            (k, v),
            lens_on_mesh,
            lens,
            prompts.shape[1],
            self._batch_order(to_host(toks)[-1]),
            self._batch_order(to_host(logits)[-1]),
            self.generation.stop_tokens,
        )

    def decode(self, state: DecodeState, n: int) -> tuple[DecodeState, np.ndarray]:
        """``n`` decode steps in one call of the pipelined decode program (compiled on first
        use for each n): the next state and the tokens ``[B, n]`` in batch order."""
        self.check_decode(state, n)
        program = self.decode_program(n, state.ragged)
        out, done, k, v = program(
            state.placed,
            self._rows(np.asarray(state.last_tokens, np.int32)),
            *state.caches,
            state.prompt_lens,
            self._rows(np.asarray(state.done, bool)),
            np.int32(state.decode_steps),
        )
        out = to_host(out)[-1]  # [n, M, replicas * b_mb]
        tokens = np.stack([self._batch_order(step) for step in out], axis=1)
        return state.advanced((k, v), tokens, self._batch_order(to_host(done)[-1])), tokens

    def teacher_forced(self, placed, prompts, tokens) -> Forced:
        """Feed ``tokens [B, gen_len]`` (the reference's) instead of this placement's own, and
        return what it would have chosen at every step and its logits there."""
        state = self.prefill(placed, prompts)
        first_logits = state.first_logits
        first = first_logits.argmax(-1).astype(np.int32)  # its own choice: argmax
        tokens = np.asarray(tokens, np.int32)
        steps = [(first, first_logits.max(-1), first_logits[np.arange(len(first)), tokens[:, 0]])]
        if self.shape.gen_len > 1:
            if self._forced_decode is None or self._forced_decode[0] != state.ragged:
                program = self._build_decode(self.shape.gen_len - 1, True, state.ragged)
                self._forced_decode = (state.ragged, program)
            given = self._rows(tokens[:, 0])
            forced = put_global(tokens[:, 1:].T, NamedSharding(self.mesh, P(None, "data")))
            outs = self._forced_decode[1](placed, given, forced, *state.caches, state.prompt_lens)
            own, top, at = (to_host(o)[-1] for o in outs)  # each [D, M, replicas * b_mb]
            for k in range(own.shape[0]):
                steps.append(tuple(self._batch_order(o[k]) for o in (own, top, at)))
        own, top, at = (np.stack(column, axis=1) for column in zip(*steps, strict=True))
        return Forced(own, top, at, np.asarray(first_logits).std(axis=-1))

    def abstract_inputs(self) -> dict:
        """Every program input as a ShapeDtypeStruct with its sharding: lowering and compiling
        with these allocates nothing, so a full-size model can be checked on a small machine."""

        def spec_struct(x, spec, rows=None, repeats=None):
            shape = list(x.shape if rows is None else (rows, *x.shape[1:]))
            for axis, r in (repeats or {}).items():
                shape[axis] *= r
            return jax.ShapeDtypeStruct(
                tuple(shape), x.dtype, sharding=NamedSharding(self.mesh, spec)
            )

        canonical = abstract_params(self.cfg)
        params = {
            k: spec_struct(v, self._param_specs[k]) for k, v in canonical.items() if k != "layers"
        }
        params["layers"] = {
            k: spec_struct(v, self._param_specs["layers"][k], len(self.rows), self._repeats[k])
            for k, v in canonical["layers"].items()
        }
        params["sizes"] = spec_struct(jax.ShapeDtypeStruct(self.sizes.shape, jnp.int32), P("stage"))
        batch = self.shape.batch
        cache = jax.ShapeDtypeStruct(
            self.cache_shape(),
            self.kv_dtype,
            sharding=NamedSharding(self.mesh, cache_spec(self.plan)),
        )
        ints = jnp.int32
        return {
            "params": params,
            "prompts": spec_struct(
                jax.ShapeDtypeStruct((batch, self.shape.prompt_len), ints), P("data", None)
            ),
            "first": spec_struct(jax.ShapeDtypeStruct((batch,), ints), P("data")),
            "lens": spec_struct(jax.ShapeDtypeStruct((batch,), ints), P("data")),
            "done": spec_struct(jax.ShapeDtypeStruct((batch,), jnp.bool_), P("data")),
            "start": jax.ShapeDtypeStruct((), ints),
            "cache": cache,
        }

    def program(self, name: str):
        """``"prefill"`` or ``"decode"`` (all gen_len - 1 steps in one call) with its abstract
        inputs: (the jitted program, its arguments)."""
        a = self.abstract_inputs()
        if name == "prefill":
            return self._prefill, (a["params"], a["prompts"], a["lens"])
        args = (a["params"], a["first"], a["cache"], a["cache"], a["lens"], a["done"], a["start"])
        return self.decode_program(self.shape.gen_len - 1), args

    @property
    def canonical_rows(self) -> bool:
        """True when the placed layout is the canonical one (uniform stages, no padding, no
        copied K/V heads or repeated scales)."""
        repeated = any(self._repeats.values())
        return not repeated and np.array_equal(self.rows, np.arange(self.cfg.n_layers))

    def canonical(self, placed: dict) -> dict:
        """Placed weights back in the canonical ``[L, ...]`` layout (for saving)."""
        params = {k: v for k, v in placed.items() if k != "sizes"}
        if self.canonical_rows:
            return params
        first_row = [int(np.flatnonzero(self.rows == i)[0]) for i in range(self.cfg.n_layers)]
        layers = {}
        for k, v in params["layers"].items():
            v = to_host(v)[first_row]
            for axis, r in self._repeats[k].items():  # copied K/V heads, repeated scales
                v = np.take(v, np.arange(0, v.shape[axis], r), axis)
            layers[k] = v
        params["layers"] = layers
        return params

    def compiled(self, program: str):
        """The compiled ``"prefill"`` or ``"decode"`` program, from abstract inputs."""
        fn, args = self.program(program)
        return fn.lower(*args).compile()

    def lowered_decode_text(self) -> str:
        """The compiled decode program's HLO, for inspecting its collectives."""
        return self.compiled("decode").as_text()
