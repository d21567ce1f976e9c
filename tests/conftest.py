"""Shared test set-up."""

import pytest


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # rich wraps at the terminal width; a wide one keeps each table row on one line for asserts.
    monkeypatch.setenv("COLUMNS", "200")
