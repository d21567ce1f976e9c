"""Training the small models on synthetic tasks (optax)."""
