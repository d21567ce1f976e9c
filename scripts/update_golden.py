"""Rewrite the golden sharding dumps in tests/golden/ after an intended change to the rules.

    python scripts/update_golden.py

Review the diff before committing it: the test exists to catch unintended changes.
"""

from pathlib import Path

from jaxpart.baseline import baseline_plan
from jaxpart.config import load_mesh, load_model
from jaxpart.plan import make_plan
from jaxpart.sharding import spec_dump_text

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def golden_cases():
    model, mesh = load_model("dense16-tiny"), load_mesh("cpu16")
    return {
        "sharding_dense16-tiny_layerwise.json": (model, make_plan(model, mesh)),
        "sharding_dense16-tiny_tp8pp2.json": (model, baseline_plan(model, mesh, 8, 2)),
    }


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, (model, plan) in golden_cases().items():
        (GOLDEN / name).write_text(spec_dump_text(model, plan))
        print(f"wrote tests/golden/{name}")


if __name__ == "__main__":
    main()
