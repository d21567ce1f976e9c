"""Golden PartitionSpec dumps: every leaf's mesh axes per (model, plan), diffed line by line."""

import difflib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("update_golden", ROOT / "scripts/update_golden.py")
update_golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_golden)

from jaxpart.runtime.sharding import spec_dump_text  # noqa: E402


@pytest.mark.parametrize("name", sorted(update_golden.golden_cases()))
def test_sharding_matches_golden(name):
    model, plan = update_golden.golden_cases()[name]
    expected = (ROOT / "tests" / "golden" / name).read_text()
    actual = spec_dump_text(model, plan)
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True)))
    assert actual == expected, f"shardings changed (scripts/update_golden.py rewrites):\n{diff}"
