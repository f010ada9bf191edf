"""Which tests share a local cluster on a parallel run (.ci/run: pytest-xdist, `--dist loadgroup`).

A test that uses the cluster (the `cluster` mark or the `control_plane` fixture) belongs to a
cluster group: `cluster`, or the one its mark names (`pytest.mark.cluster(group="serving")`).
xdist runs each group in one worker, and each worker starts a cluster of its own, so two groups
run side by side on two clusters while the in-process tests fill the gaps. The groups are the
largest work units, which xdist hands out first: with two groups and two workers, each worker gets one.
"""

from __future__ import annotations

import os

import pytest

DEFAULT = "cluster"


def cluster_group(item: pytest.Item) -> str | None:
    """The cluster group of a test; None for a test that runs in-process only."""
    mark = item.get_closest_marker("cluster")
    if mark:
        return str(mark.kwargs.get("group", DEFAULT))
    return DEFAULT if "control_plane" in getattr(item, "fixturenames", ()) else None


def cluster_dir(default: str = "/tmp/tuneroute-test-cluster") -> str:
    """This test process's cluster directory: TUNEROUTE_TEST_CLUSTER_DIR (or the default), with the
    xdist worker's name appended on a parallel run (one cluster per worker)."""
    directory = os.environ.get("TUNEROUTE_TEST_CLUSTER_DIR", default).rstrip("/")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{directory}-{worker}" if worker else directory
