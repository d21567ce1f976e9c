"""Multi-host runs: 2 processes x 8 simulated CPU devices on loopback, through jax.distributed
and JAX's CPU collectives, give the single-process tokens; failures end fast and leave no
process behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GEN = ["--model", "dense16-tiny", "--mesh", "cpu16", "--gen-len", "4"]
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def jaxpart(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "jaxpart.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["layerwise", "baseline"])
def test_two_processes_give_the_single_process_tokens(tmp_path, method):
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    proc = jaxpart("generate", *GEN, "--method", method, "--json", str(single))
    assert proc.returncode == 0, proc.stderr
    proc = jaxpart(
        "launch",
        "--processes",
        "2",
        "--",
        "generate",
        *GEN,
        "--method",
        method,
        "--json",
        str(multi),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(multi.read_text())["tokens"] == json.loads(single.read_text())["tokens"]
    assert proc.stdout.count("method: ") == 1, "only process 0 prints"


@pytest.mark.slow
def test_a_dying_process_stops_the_launch_and_leaves_no_orphans():
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxpart.cli",
            "launch",
            "--processes",
            "2",
            "--",
            "compare",
            "--repeats",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.time() + 60
        while len(children := children_of(launcher.pid)) < 2:
            assert time.time() < deadline, "the launcher did not start two processes"
            time.sleep(0.1)
        time.sleep(8)  # well into the run: joined, compiling or measuring
        victim = next(
            c for c in children if "--process-id\x001" in Path(f"/proc/{c}/cmdline").read_text()
        )
        os.kill(victim, signal.SIGKILL)
        t0 = time.time()
        _, err = launcher.communicate(timeout=60)
        assert time.time() - t0 < 30
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "process 1 of 2 failed (signal 9)" in err
    assert not any(alive(c) for c in children), "no orphans"


def test_bad_flags_are_one_line_errors_in_bounded_time():
    t0 = time.time()
    proc = jaxpart(
        "generate",
        *GEN,
        "--num-processes",
        "2",
        "--process-id",
        "2",
        "--coordinator",
        "127.0.0.1:1",
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--process-id = 2: must be in [0, 2)" in proc.stderr
    proc = jaxpart(
        "generate",
        *GEN,
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator",
        "127.0.0.1:1",
        "--init-timeout",
        "3",
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "'127.0.0.1:1': process 0 and the others did not all join" in proc.stderr
    # Process 0 with no peer: one line, exit 2, within 10 s (never a native abort).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t1 = time.time()
    proc = jaxpart(
        "generate",
        *GEN,
        "--num-processes",
        "2",
        "--process-id",
        "0",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--init-timeout",
        "5",
    )
    assert time.time() - t1 < 10
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "0 of the 1 other process(es) joined within --init-timeout = 5 s" in proc.stderr
    proc = jaxpart("launch", "--processes", "2", "--", "plan", "--model", "dense16")
    assert proc.returncode == 2 and "must be one of ['generate', 'compare']" in proc.stderr
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_each_process_reads_only_its_share_of_a_checkpoint(tmp_path):
    # TP8 x PP2 over 2 processes x 8 devices: each process holds one pipeline stage, so it
    # reads that stage's layers (and the small replicated embedding, head and norm) from the
    # safetensors file, lazily, and the tokens are those of one process reading everything.
    import importlib.util

    root = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("tiny", root / "tiny_checkpoints.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    folder = tiny.write_checkpoint(tmp_path / "llama-tiny", "llama-tiny-untied")
    run = ["--model", str(folder), "--mesh", "cpu16", "--method", "baseline", "--gen-len", "3"]
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    proc = jaxpart("generate", *run, "--json", str(single))
    assert proc.returncode == 0, proc.stderr
    proc = jaxpart("launch", "--processes", "2", "--", "generate", *run, "--json", str(multi))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(multi.read_text())
    assert two["tokens"] == one["tokens"]
    total = one["checkpoint_bytes"]
    assert one["weights_read_bytes_per_process"] == [total]
    read = two["weights_read_bytes_per_process"]
    assert len(read) == 2 and all(r < 0.6 * total for r in read), (read, total)
    assert sum(read) >= total
