"""Shared test set-up: 16 simulated CPU devices, as `jaxpart` gives a CPU mesh itself; and the
two tiers of the suite.

Plain ``pytest`` runs the fast tier (``-m 'not slow'`` in pyproject.toml's addopts),
``pytest -m slow`` the slow tier and ``pytest -m 'slow or not slow'`` everything. A test is
slow when it says so (``@pytest.mark.slow`` or a module's ``pytestmark``) or when
`pytest_collection_modifyitems` below finds, in what it runs, any of:

1. the ``cpu16`` fixture, directly or through another fixture: the test places something on
   the 16-device mesh, which compiles sharded programs;
2. a call of an executor builder: ``jaxpart.runtime.engine.generate`` or ``make_executor``,
   any jaxpart subclass of the runtime's ``Executor`` (``ReferenceExecutor``,
   ``PipelineExecutor``, ...) or ``jaxpart.train.loop.train``;
3. a run command of the CLI (``generate``, ``compare``, ``verify``, ``train``, ``launch``)
   called through ``main([...])`` or a helper that calls it, unless the test asserts that the
   call exits 2: a refused input stops before anything compiles, so bad-input tests stay fast;
4. a subprocess (the ``subprocess`` or ``multiprocessing`` modules): a fresh interpreter
   imports jax and sets up its devices again;
5. a Pallas kernel run in interpret mode: a parameter equal to ``"pallas"``, or a Pallas
   backend in the test's code (``"pallas"`` given as an argument or listed beside other
   backends, ``Backend.PALLAS``, or a module-level constant holding one: a ``KernelChoice``, a
   list of backend names). Not counted: a choice made with ``interpret=False`` (refused on
   CPU, or lowered for CUDA without running) and a use only inside ``jax.make_jaxpr``
   (traced, never run).

"What it runs" is the test function's source, the functions of its own module that it calls
(followed transitively, so that ``_run``-style helpers count) and the bodies of the fixtures
it uses that are defined in the tests folder. The rules read code, not timings, so a new test
lands in the right tier by what it does; a slow test they miss can say ``@pytest.mark.slow``.
Each test marked here carries the rule that marked it, as the marker's ``reason``
(``item.get_closest_marker("slow").kwargs["reason"]``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
import types
from pathlib import Path

import jax
import pytest

from jaxpart.runtime.sharding import ensure_cpu_devices

ensure_cpu_devices(16)

TESTS = Path(__file__).resolve().parent
RUN_COMMANDS = frozenset({"generate", "compare", "verify", "train", "launch"})
EXECUTOR_FUNCTIONS = frozenset(
    {
        "jaxpart.runtime.engine.generate",
        "jaxpart.runtime.engine.make_executor",
        "jaxpart.train.loop.train",
    }
)
SUBPROCESS_MODULES = frozenset({"subprocess", "multiprocessing"})
PALLAS = "pallas"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # rich wraps at the terminal width; a wide one keeps each table row on one line for asserts.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="session")
def cpu16():
    assert len(jax.devices()) == 16, "the suite needs 16 simulated CPU devices"
    return jax.devices()


# --- the slow tier, marked from what each test runs ------------------------------------------


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        reason = slow_reason(item)
        if reason:
            item.add_marker(pytest.mark.slow(reason=reason))


def slow_reason(item) -> str | None:
    if "cpu16" in getattr(item, "fixturenames", ()):
        return "uses the cpu16 fixture"
    callspec = getattr(item, "callspec", None)
    if callspec and any(_is_pallas(v) for v in callspec.params.values()):
        return "a Pallas kernel in interpret mode (a 'pallas' parameter)"
    function = getattr(item, "function", None)
    module = getattr(item, "module", None)
    if function is None or module is None:
        return None
    codes = [_Code.of(function, module)]
    for fixture in _fixture_functions(item):
        codes.append(_Code.of(fixture, inspect.getmodule(fixture) or module))
    seen: set = set()
    for code in codes:
        for part in code.closure(seen):
            reason = part.reason()
            if reason:
                return reason
    return None


def _fixture_functions(item):
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            func = inspect.unwrap(getattr(fixturedef, "func", None) or (lambda: None))
            path = getattr(getattr(func, "__code__", None), "co_filename", "")
            if path and Path(path).resolve().is_relative_to(TESTS):
                yield func


def _is_pallas(value) -> bool:
    """A value that asks for Pallas in interpret mode: "pallas", a KernelChoice with a Pallas
    field that does not set interpret=False, or a collection holding one."""
    if isinstance(value, str):
        return value == PALLAS
    if type(value).__name__ == "KernelChoice":
        fields = (getattr(value, "mlp", None), getattr(value, "attention", None))
        return getattr(value, "interpret", None) is not False and PALLAS in fields
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_is_pallas(v) for v in value)
    return False


class _Code:
    """One function's syntax tree and the names it can see."""

    def __init__(self, function, module):
        self.function, self.module = function, module
        try:
            source = textwrap.dedent(inspect.getsource(function))
            self.tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError):
            self.tree = ast.Module(body=[], type_ignores=[])
        for node in self.tree.body:  # parametrize lists are the callspec's, not the body's
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []
        self.local_imports = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.local_imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.local_imports[alias.asname or alias.name.split(".")[0]] = (
                        alias.name.split(".")[0] if not alias.asname else alias.name,
                        None,
                    )
        self.assigned = {}  # name -> the value of its (last) plain assignment in this function
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    self.assigned[target.id] = node.value

    @staticmethod
    @functools.cache
    def of(function, module):
        return _Code(function, module)

    # -- names -----------------------------------------------------------------------------

    def resolve(self, node):
        """The object a Name or a dotted Attribute stands for, or None."""
        if isinstance(node, ast.Name):
            if node.id in self.local_imports:
                module_name, attr = self.local_imports[node.id]
                try:
                    obj = importlib.import_module(module_name)
                    return getattr(obj, attr) if attr else obj
                except Exception:
                    return None
            if node.id in self.assigned:
                return None  # a local variable shadows the module's name
            return vars(self.module).get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self.resolve(node.value)
            if isinstance(owner, types.ModuleType):
                return getattr(owner, node.attr, None)
        return None

    def helpers(self):
        """The functions of the test's own module that this code calls by name."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                obj = self.resolve(node.func)
                if (
                    isinstance(obj, types.FunctionType)
                    and obj.__module__ == self.module.__name__
                    and obj is not self.function
                ):
                    yield obj

    def closure(self, seen: set):
        """This code and every helper it reaches, each once."""
        stack = [self]
        while stack:
            code = stack.pop()
            if code.function in seen:
                continue
            seen.add(code.function)
            yield code
            stack.extend(_Code.of(f, code.module) for f in code.helpers())

    @functools.cached_property
    def calls_main(self) -> bool:
        """Whether this code, or a helper it reaches, calls the CLI's main."""
        return any(c._calls_main_here() for c in self.closure(set()))

    def _calls_main_here(self) -> bool:
        return any(
            isinstance(node, ast.Call) and _is_cli_main(self.resolve(node.func))
            for node in ast.walk(self.tree)
        )

    # -- the rules -------------------------------------------------------------------------

    def reason(self) -> str | None:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Name, ast.Attribute)):
                obj = self.resolve(node)
                if _is_subprocess(obj):
                    return f"starts a subprocess ({self.function.__name__})"
            if isinstance(node, ast.Call):
                obj = self.resolve(node.func)
                if _builds_executors(obj):
                    return f"builds an executor ({_name_of(obj)} in {self.function.__name__})"
                command = self._run_command(node, obj)
                if command and not self._refused(node):
                    return f"runs `jaxpart {command}` ({self.function.__name__})"
        if self._runs_pallas():
            return f"a Pallas kernel in interpret mode ({self.function.__name__})"
        return None

    def _run_command(self, call: ast.Call, callee) -> str | None:
        """The run command that ``call`` (to main, or to a helper calling it) starts, if any."""
        if _is_cli_main(callee):
            pass
        elif not (
            isinstance(callee, types.FunctionType)
            and callee.__module__ == self.module.__name__
            and _Code.of(callee, self.module).calls_main
        ):
            return None
        for arg in call.args:
            first = self._first_word(arg)
            if first is not None:
                return first if first in RUN_COMMANDS else None
        return None

    def _first_word(self, node, depth: int = 0):
        """The first string of an argument list as written: a literal, a list or tuple literal,
        or a name assigned one in this function."""
        if depth > 4:
            return None
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            return self._first_word(node.elts[0], depth + 1)
        if isinstance(node, ast.Starred):
            return self._first_word(node.value, depth + 1)
        if isinstance(node, ast.Name) and node.id in self.assigned:
            return self._first_word(self.assigned[node.id], depth + 1)
        if isinstance(node, ast.Call) and node.args:  # list(argv), [str(a) for ...]
            return self._first_word(node.args[0], depth + 1)
        return None

    def _refused(self, call: ast.Call) -> bool:
        """Whether the test asserts that ``call`` exits 2: ``main(...) == 2``, or its result (or
        the first of a returned tuple) assigned to a name that is compared with 2 only."""
        parent = self.parents.get(call)
        if isinstance(parent, ast.Compare) and parent.left is call:
            return _compares_only_with_2(parent)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            target = parent.targets[0]
            if isinstance(target, ast.Tuple) and target.elts:
                target = target.elts[0]
            if isinstance(target, ast.Name):
                compares = [
                    n
                    for n in ast.walk(self.tree)
                    if isinstance(n, ast.Compare)
                    and isinstance(n.left, ast.Name)
                    and n.left.id == target.id
                ]
                return bool(compares) and all(_compares_only_with_2(c) for c in compares)
        return False

    @functools.cached_property
    def parents(self) -> dict:
        return {child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)}

    def _runs_pallas(self) -> bool:
        parents = self.parents
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Constant):  # an argument or a listed backend, not a key
                pallas = node.value == PALLAS and isinstance(
                    parents.get(node), (ast.Call, ast.keyword, ast.List, ast.Tuple, ast.Set)
                )
            elif isinstance(node, ast.Attribute) and node.attr == "PALLAS":
                pallas = True
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                pallas = node.id not in self.assigned and _is_pallas(self.resolve(node))
            else:
                pallas = False
            if pallas and not self._traced_or_not_interpreted(node, parents):
                return True
        return False

    @staticmethod
    def _traced_or_not_interpreted(node, parents) -> bool:
        """Whether ``node`` sits in a call that sets interpret=False, or in a lambda given to
        jax.make_jaxpr."""
        while node in parents:
            parent = parents[node]
            if isinstance(parent, ast.Call):
                if any(
                    k.arg == "interpret"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is False
                    for k in parent.keywords
                ):
                    return True
                func = parent.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "make_jaxpr" and isinstance(node, ast.Lambda):
                    return True
            node = parent
        return False


def _is_subprocess(obj) -> bool:
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    else:
        name = getattr(obj, "__module__", None) if callable(obj) else None
    return isinstance(name, str) and name.split(".")[0] in SUBPROCESS_MODULES


def _compares_only_with_2(compare: ast.Compare) -> bool:
    return all(isinstance(op, ast.Eq) for op in compare.ops) and all(
        isinstance(c, ast.Constant) and c.value == 2 for c in compare.comparators
    )


def _name_of(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _is_cli_main(obj) -> bool:
    return (
        callable(obj)
        and getattr(obj, "__name__", "") == "main"
        and (getattr(obj, "__module__", "") or "").startswith("jaxpart.cli")
    )


def _builds_executors(obj) -> bool:
    if obj is None:
        return False
    if isinstance(obj, type):
        return (obj.__module__ or "").startswith("jaxpart.") and any(
            base.__name__ == "Executor" and base.__module__.startswith("jaxpart.runtime")
            for base in obj.__mro__
        )
    return callable(obj) and _name_of(obj) in EXECUTOR_FUNCTIONS
