"""Planning, no jax: the memory model, the partitioners, the plan, the TP x PP baseline and how
each method places a model."""
