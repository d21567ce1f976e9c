"""Shared test set-up: 16 simulated CPU devices, as `jaxpart` gives a CPU mesh itself."""

import jax
import pytest

from jaxpart.runtime.sharding import ensure_cpu_devices

ensure_cpu_devices(16)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # rich wraps at the terminal width; a wide one keeps each table row on one line for asserts.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="session")
def cpu16():
    assert len(jax.devices()) == 16, "the suite needs 16 simulated CPU devices"
    return jax.devices()
