"""What the operator image needs: no torch, and pins that match the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_operator_imports_neither_torch_nor_the_routers_runtime():
    code = "import sys, tuneroute_operator.handlers; bad = {'torch', 'transformers', 'httpx', 'wordllama'} & set(sys.modules); sys.exit(f'imported {bad}' if bad else 0)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("operator", "trainer-image", "router-image"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _pins(path: Path) -> dict[str, str]:
    norm = lambda name: name.lower().replace("_", "-")  # noqa: E731
    lines = [l.split("#")[0].strip() for l in path.read_text().splitlines()]
    return {norm(l.split("==")[0]): l.split("==")[1] for l in lines if "==" in l}


@pytest.mark.parametrize("image", ["operator", "trainer-image", "router-image"])
def test_image_pins_match_the_lock_the_tests_run_on(image):
    lock = _pins(REPO / "requirements.lock")
    differ = {n: (v, lock.get(n)) for n, v in _pins(REPO / image / "requirements.txt").items() if n in lock and lock[n] != v}
    assert not differ, f"{image}/requirements.txt vs requirements.lock: {differ}"
