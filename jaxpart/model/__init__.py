"""The dense decoder in JAX: its layers, parameters and kernels (Pallas, with XLA fallbacks)."""
