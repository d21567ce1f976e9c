"""Which backend runs a kernel: the choice passed down to every layer, and how a request for
Pallas is met on this platform (a fallback to XLA warns once with its reason; strict refuses)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from jaxpart.config import Backend

BACKENDS = tuple(Backend)
DEFAULT_SRAM_BYTES = 227 * 1024  # H100: the shared memory one thread block may use
DEFAULT_SM_COUNT = 132  # H100 SXM
_warned: set[str] = set()


class KernelFallbackError(RuntimeError):
    """Pallas was asked for strictly and cannot run these shapes or on this platform."""


@dataclass(frozen=True)
class KernelChoice:
    """How the model's MLP and attention run: hashable, so that jit can take it as static.

    ``auto`` is Pallas on GPU and XLA elsewhere; ``pallas`` on CPU runs in interpret mode (for
    tests). ``platform`` is the platform to compile for (default: jax's default backend); set it
    to ``"gpu"`` to lower for CUDA on a machine without one.
    """

    mlp: Backend = Backend.AUTO
    attention: Backend = Backend.AUTO
    sram_bytes: int = DEFAULT_SRAM_BYTES
    sm_count: int = DEFAULT_SM_COUNT
    strict: bool = False
    interpret: bool | None = None
    platform: str | None = None

    def __post_init__(self):
        for flag, value in (("--mlp-kernel", self.mlp), ("--attention", self.attention)):
            if value not in BACKENDS:
                raise ValueError(f"{flag} = {value!r}: use one of {list(BACKENDS)}")


AUTO = KernelChoice()
XLA = KernelChoice(mlp=Backend.XLA, attention=Backend.XLA)


def target_platform(choice: KernelChoice) -> str:
    if choice.platform is not None:
        return choice.platform
    import jax

    return jax.default_backend()


def cpu_barrier(x, choice: KernelChoice):
    """``x`` (a slice of a stacked weight or of the KV cache) behind an optimization barrier when
    compiling for CPU. XLA's CPU backend computes bf16 matmuls in f32: without the barrier its
    simplifier moves the widening convert onto the whole stack and hoists it out of the layer
    loop, an f32 copy of every layer's weights (3 x 10.3 GB for Llama 3.1 70B's MLP on one
    device) that a GPU program never makes. On GPU the slice stays fusible into its consumer, and
    in float32 there is nothing to widen: no barrier (it would cost a copy of each slice)."""
    if target_platform(choice) != "cpu":
        return x
    import jax

    if all(leaf.dtype.itemsize != 2 for leaf in jax.tree.leaves(x)):
        return x
    return jax.lax.optimization_barrier(x)


def fallback(kernel: str, reason: str, strict: bool) -> Backend:
    """XLA instead of ``kernel``'s Pallas path: one warning per reason, or an error if strict."""
    if strict:
        raise KernelFallbackError(f"Pallas {kernel} kernel unavailable: {reason} (strict mode)")
    key = f"{kernel}: {reason}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"Pallas {kernel} kernel unavailable, using XLA: {reason}", stacklevel=4)
    return Backend.XLA


def resolve(kernel: str, requested: Backend, choice: KernelChoice) -> tuple[Backend, bool]:
    """-> (PALLAS | XLA, interpret): what runs ``kernel`` on the target platform."""
    if requested not in BACKENDS:
        raise ValueError(f"backend={requested!r}: use one of {list(BACKENDS)}")
    platform = target_platform(choice)
    if requested == Backend.XLA or (requested == Backend.AUTO and platform != "gpu"):
        return Backend.XLA, False
    if platform == "cpu":
        if choice.interpret is False:
            raise KernelFallbackError(
                f"Pallas {kernel} kernel: on CPU, Pallas runs only in interpret mode "
                "(interpret=True)"
            )
        return Backend.PALLAS, True
    if platform != "gpu":
        return fallback(
            kernel, f"no Pallas GPU lowering on platform {platform!r}", choice.strict
        ), False
    return Backend.PALLAS, bool(choice.interpret)
