"""`.ci/run` runs the suite in two pytest-xdist workers, each with a cluster of its own; the tests
of one cluster group must all run in one worker (tests/conftest.py groups them), or a test would
miss what its group set up on its cluster, and the two groups must run in different workers, or
one worker would run both one after the other. pytest-xdist's grouping has broken silently before
(pytest 9.2), so this runs a small suite through the same hook and options and checks where each
test ran and which cluster directory it was given."""

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
    "test_serving.py": """
        import pytest
        pytestmark = pytest.mark.cluster(group="serving")
        @pytest.mark.parametrize("i", range(3))
        def test_marked_with_a_group(i, worker_id, record):
            record("serving", worker_id)
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
from tuneroute_testing.test_groups import cluster_dir
@pytest.fixture(scope="session")
def control_plane():
    return None
@pytest.fixture
def record():
    return lambda kind, worker: open(os.environ["WHERE"], "a").write(f"{kind} {worker} {cluster_dir()}\\n")
"""


def test_each_cluster_group_runs_in_a_worker_of_its_own_beside_the_others(tmp_path):
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
        capture_output=True, text=True, cwd=suite, timeout=120,
        env={**os.environ, "WHERE": str(where), "TUNEROUTE_TEST_CLUSTER_DIR": "/tmp/c"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in where.read_text().splitlines()]
    assert len(rows) == 19, rows

    def ran(kind):
        return {(worker, directory) for k, worker, directory in rows if k == kind}

    cluster, serving = ran("cluster"), ran("serving")
    assert len(cluster) == 1 and len(serving) == 1, rows
    assert cluster != serving, "both cluster groups ran in one worker"
    assert {d for _, d in cluster | serving} == {"/tmp/c-gw0", "/tmp/c-gw1"}  # a cluster per worker
    assert {w for w, _ in ran("other")}, "the in-process tests did not run"
