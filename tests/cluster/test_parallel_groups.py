"""`.ci/run` runs the suite in two pytest-xdist workers; the tests of the local cluster must all
run in one of them (tests/conftest.py groups them), or two workers would start and stop one
cluster under each other. pytest-xdist's grouping has broken silently before (pytest 9.2), so
this runs a small suite through the same hook and options and checks where each test ran."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tuneroute_testing import REPO

SUITE = {
    "test_cluster.py": """
        import pytest
        pytestmark = pytest.mark.cluster
        @pytest.mark.parametrize("i", range(4))
        def test_marked(i, worker_id, record):
            record("cluster", worker_id)
    """,
    "test_fixture.py": """
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_uses_the_cluster(i, control_plane, worker_id, record):
            record("cluster", worker_id)
        @pytest.mark.parametrize("i", range(8))
        def test_in_process(i, worker_id, record):
            record("other", worker_id)
    """,
}

CONFTEST = """
import os
import pytest
from conftest_under_test import pytest_itemcollected  # noqa: F401
@pytest.fixture(scope="session")
def control_plane():
    return None
@pytest.fixture
def record():
    return lambda kind, worker: open(os.environ["WHERE"], "a").write(f"{kind} {worker}\\n")
"""


def test_every_cluster_test_runs_in_one_worker_beside_the_others(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in SUITE.items():
        (suite / name).write_text(textwrap.dedent(text))
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "conftest_under_test.py").write_text((REPO / "tests" / "conftest.py").read_text())
    where = tmp_path / "where.txt"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider",
         "-W", "ignore::pytest.PytestUnknownMarkWarning", str(suite)],
        capture_output=True, text=True, cwd=suite, timeout=120, env={**os.environ, "WHERE": str(where)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in where.read_text().splitlines()]
    cluster = {worker for kind, worker in rows if kind == "cluster"}
    other = {worker for kind, worker in rows if kind == "other"}
    assert len(rows) == 16 and len(cluster) == 1, rows
    assert other - cluster, "the in-process tests never ran beside the cluster's"
