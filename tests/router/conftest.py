"""Fixtures for the router tests; the harness itself is router_harness.py (a unique module
name, so it cannot clash with other test folders' conftest modules)."""

from pathlib import Path

import pytest

from tuneroute_testing.router_harness import Backend


@pytest.fixture(scope="module")
def tmp_mod(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("router")


@pytest.fixture(scope="module")
def backends(tmp_mod):
    small = Backend("small", tmp_mod).start()
    large = Backend("large", tmp_mod).start()
    yield small, large
    small.proc.stop()
    large.proc.stop()


@pytest.fixture
def pair(tmp_path):
    """Two fresh backends (small, large) for one test: for tests that change how they behave."""
    small, large = Backend("small", tmp_path).start(), Backend("large", tmp_path).start()
    yield small, large
    small.proc.stop()
    large.proc.stop()
