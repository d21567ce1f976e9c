"""The package's layout: each folder has one job, imports run one way, nothing imports the CLI,
there is no import cycle, and config, planning and perf never load jax. Read from the code's
own import statements (function-local ones included)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jaxpart"

# Which packages each package may import (besides itself). The order is the data path:
# config -> planning -> perf; model -> io -> runtime -> measure / train -> cli.
ALLOWED = {
    "config": set(),
    "planning": {"config"},
    "perf": {"config", "planning"},
    "model": {"config", "planning"},
    "io": {"config", "model"},
    "runtime": {"config", "planning", "model", "io"},
    "measure": {"config", "planning", "perf", "model", "io", "runtime"},
    "train": {"config", "model", "io", "runtime"},
    "cli": {"config", "planning", "perf", "model", "io", "runtime", "measure", "train"},
}
JAX_FREE = ("config", "planning", "perf")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _run_time_nodes(tree: ast.AST):
    """Every node that runs: ``if TYPE_CHECKING:`` blocks (annotations only) left out."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        yield node
        yield from _run_time_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Every jaxpart module ``path`` imports when it runs, at any depth of its code."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in _run_time_nodes(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("jaxpart")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("jaxpart"):
                out.add(node.module)
                # `from jaxpart.io import checkpoint` imports the module jaxpart.io.checkpoint
                for alias in node.names:
                    if (PACKAGE.parent / node.module.replace(".", "/") / alias.name).exists() or (
                        PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py"
                    ).exists():
                        out.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("jaxpart"):
                out.add(arg.value)
    return out


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_package_with_one_job():
    loose = [m for m in GRAPH if m.count(".") == 1 and package_of(m) not in ALLOWED]
    assert loose == [], "modules outside the layout's packages"
    assert set(ALLOWED) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    wrong = sorted(
        (m, i)
        for m, imported in GRAPH.items()
        if package_of(m) == package
        for i in imported
        if package_of(i) not in (None, package, *ALLOWED[package])
    )
    assert wrong == [], f"{package} imports what it may not: {wrong}"
    # and never the package root, whose names come from every layer
    assert not [
        m for m, imported in GRAPH.items() if package_of(m) == package and "jaxpart" in imported
    ]


def test_nothing_outside_the_cli_imports_it():
    users = sorted(
        m
        for m, imported in GRAPH.items()
        if package_of(m) != "cli" and any(package_of(i) == "cli" for i in imported)
    )
    assert users == []


def test_no_import_cycle():
    # A module importing a package also imports that package's __init__.
    def targets(module):
        out = set()
        for imported in GRAPH.get(module, ()):
            parts = imported.split(".")
            out |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)} & set(GRAPH)
        return out - {module}

    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for t in sorted(targets(module)):
            if state.get(t) == "open":
                # a package's own __init__ importing its submodules is not a cycle of modules
                cycle = stack[stack.index(t) :] + [t]
                if not all(c.startswith(t + ".") or c == t for c in cycle):
                    pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            elif t not in state:
                visit(t)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("package", JAX_FREE)
def test_jax_free_packages_never_import_jax_in_their_code(package):
    heavy = ("jax", "jaxlib", "flax", "optax", "orbax")
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in heavy, f"{path.name} imports {name}"


def test_importing_the_jax_free_packages_leaves_jax_unloaded():
    code = (
        "import sys, jaxpart.planning, jaxpart.perf, jaxpart.config; "
        "import jaxpart.perf.search, jaxpart.perf.simulate, jaxpart.perf.validation; "
        "import jaxpart.planning.placement, jaxpart.cli.render; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
