"""Rewrite the golden sharding dumps in tests/golden/ after an intended change to the rules.

    python scripts/update_golden.py

Review the diff before committing it: the test exists to catch unintended changes.
"""

from pathlib import Path

from jaxpart.config import default_run, load_mesh, load_model
from jaxpart.planning.baseline import baseline_plan
from jaxpart.planning.plan import make_plan
from jaxpart.runtime.sharding import spec_dump_text

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def golden_cases():
    """dense16-tiny, and gqa-tiny (grouped K/V heads, SwiGLU, tied head), in both placements."""
    mesh = load_mesh("cpu16")
    cases = {}
    for name in ("dense16-tiny", "gqa-tiny"):
        model, run = load_model(name), default_run(name)
        cases[f"sharding_{name}_layerwise.json"] = (model, make_plan(model, mesh, run))
        cases[f"sharding_{name}_tp8pp2.json"] = (model, baseline_plan(model, mesh, run, 8, 2))
    return cases


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, (model, plan) in golden_cases().items():
        (GOLDEN / name).write_text(spec_dump_text(model, plan))
        print(f"wrote tests/golden/{name}")


if __name__ == "__main__":
    main()
