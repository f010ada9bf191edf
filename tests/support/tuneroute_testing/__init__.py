"""Shared helpers of the tests, the demo and the benchmarks: the local control plane, the
operator as a process, the router harness with its fake OpenAI backend, tiny random MoE models.

Installed in editable mode from a checkout (scripts/venv.sh): REPO is that checkout.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CLUSTER_DIR = REPO / "tests" / "cluster"  # up.sh, down.sh, build.sh, the Go module, kwok stages
