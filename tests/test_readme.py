"""Every example in the README that needs no GPU, no second host and no download runs, in the
order shown, in a fresh copy of the repository, and exits 0.

The commands are read from the README's ```bash blocks (continuation lines joined, comments
dropped, `a && b` run as two steps) and its ```python block. The few that cannot run here are
listed in SKIPPED with the reason; a skip that matches no command fails, so the list cannot
silently hide an example.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# (text in the command, why it cannot run in the test suite)
SKIPPED = (
    ("pip install", "the suite runs inside the installed package"),
    ("pytest", "the test suite itself"),
    ("--coordinator 10.0.0.1", "needs a second host"),
    ("~/models/", "needs a model folder downloaded from the Hugging Face Hub"),
    ("scripts/bench_gpu.py", "needs a GPU"),
    ("--calibration results/bench_gpu.json", "needs the file bench_gpu.py writes on a GPU"),
)


def readme_examples(text: str) -> list[tuple[str, str, int]]:
    """(language, command, expected exit code) for each example, in the order shown: one per
    shell command, one per Python block. A command that shows a refusal says so at its end
    (`# exit 2`); every other one must exit 0."""
    examples: list[tuple[str, str, int]] = []
    for lang, body in re.findall(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        if lang == "python":
            examples.append(("python", body, 0))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                continue
            line, _, comment = line.partition(" #")
            expected = re.fullmatch(r"\s*exit (\d+)\s*", comment)
            for step in line.split(" && "):
                if step.strip():
                    code = int(expected.group(1)) if expected else 0
                    examples.append(("bash", " ".join(step.split()), code))
    return examples


def skip_reason(command: str) -> str | None:
    return next((why for what, why in SKIPPED if what in command), None)


def _fresh_copy(dest: Path) -> Path:
    """The repository's tracked files (what a clone has), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False
    ).stdout
    names = [n for n in listed.decode().split("\0") if n] if listed else []
    if not names:  # not a git checkout: copy the source tree
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "*.pyc", "results"))
        return dest
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    return dest


def _run(lang: str, command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    if lang == "python":
        argv = [sys.executable, "-c", command]
    else:
        argv = shlex.split(command)
        if argv[0] == "jaxpart":
            argv = [sys.executable, "-m", "jaxpart.cli", *argv[1:]]
        elif argv[0] == "python":
            argv[0] = sys.executable
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _env(cwd: Path) -> dict:
    env = dict(os.environ)
    # `PYTHONPATH=. python ...` in the README: the same here, by the environment.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("XLA_FLAGS", None)
    return env


def test_the_readme_lists_its_examples_and_every_skip_matches_one():
    examples = readme_examples(README.read_text())
    commands = [c for _, c, _ in examples]
    assert sum(c.startswith("jaxpart ") for c in commands) >= 20
    for what, why in SKIPPED:
        assert any(what in c for c in commands), f"skip {what!r} ({why}) matches no example"
    assert "jaxpart compare" in commands  # the README's first command


@pytest.mark.slow
def test_every_readme_example_runs_in_the_order_shown(tmp_path):
    repo = _fresh_copy(tmp_path / "jaxpart")
    env = _env(repo)
    ran = 0
    for lang, command, expected in readme_examples(README.read_text()):
        if skip_reason(command):
            continue
        done = _run(lang, command.removeprefix("PYTHONPATH=. "), repo, env)
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        assert done.returncode == expected, (
            f"{command!r} exited {done.returncode}, not {expected}: " + " | ".join(tail)
        )
        if expected:  # a refusal shown on purpose: one line, as every refusal is
            assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout.strip()
        ran += 1
    assert ran >= 20


if __name__ == "__main__":  # time each example: python tests/test_readme.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        repo = _fresh_copy(Path(tmp) / "jaxpart")
        env = _env(repo)
        for lang, command, _ in readme_examples(README.read_text()):
            why = skip_reason(command)
            if why:
                print(f"skipped ({why}): {command[:90]}", flush=True)
                continue
            started = time.perf_counter()
            done = _run(lang, command.removeprefix("PYTHONPATH=. "), repo, env)
            took = time.perf_counter() - started
            short = command if lang == "bash" else "python block"
            print(f"{took:7.1f} s  rc {done.returncode}  {short[:110]}", flush=True)
            if done.returncode:
                print("   ", (done.stdout + done.stderr).strip().splitlines()[-3:], flush=True)
