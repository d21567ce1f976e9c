"""The performance model, no jax: kernel timing of a plan on a GPU pod, the plan search,
`simulate`, and validation against published measurements."""
