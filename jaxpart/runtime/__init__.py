"""Running a plan: shardings, executors (place, prefill, decode), sampling, generation and
multi-host set-up."""
