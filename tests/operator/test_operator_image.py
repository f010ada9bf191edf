"""What the operator image needs: no torch, and pins that match the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_imports_neither_torch_nor_the_routers_runtime():
    code = "import sys, tuneroute_operator.handlers; bad = {'torch', 'transformers', 'httpx', 'wordllama'} & set(sys.modules); sys.exit(f'imported {bad}' if bad else 0)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("operator", "trainer-image", "router-image"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_operator_requirements_match_the_lock():
    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line and not line.startswith("#"))
    for line in (REPO / "operator" / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert lock.get(name) == version, f"{name}: operator pins {version}, lock has {lock.get(name)}"
