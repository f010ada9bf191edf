"""What the operator image needs: no torch, and pins that match the lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuneroute_testing import REPO


def test_operator_imports_neither_torch_nor_the_routers_runtime():
    code = "import sys, tuneroute_operator.handlers; bad = {'torch', 'transformers', 'starlette', 'wordllama'} & set(sys.modules); sys.exit(f'imported {bad}' if bad else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_operator_runs_with_only_its_images_packages(tmp_path):
    """Install what operator/Dockerfile installs, and nothing else, into a fresh environment:
    operator/requirements.txt, then the trainer, router and operator distributions without their
    dependencies. The operator must import and render its CRDs there."""
    env = tmp_path / "env"
    py = env / "bin" / "python"
    uv = str(Path(sys.executable).parent / "uv")  # uv is in requirements.lock
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
    install = [uv, "pip", "install", "-q", "--python", str(py)]
    subprocess.run([*install, "-r", str(REPO / "operator" / "requirements.txt")], check=True)
    subprocess.run(
        [*install, "--no-deps", *(str(REPO / d) for d in ("trainer-image", "router-image", "operator"))], check=True
    )
    code = "import tuneroute_operator.handlers; from tuneroute_operator import crd; assert len(crd.render()) == 2"
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _pins(path: Path) -> dict[str, str]:
    norm = lambda name: name.lower().replace("_", "-")
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {norm(line.split("==")[0]): line.split("==")[1] for line in lines if "==" in line}


@pytest.mark.parametrize("image", ["operator", "trainer-image", "router-image"])
def test_image_pins_match_the_lock_the_tests_run_on(image):
    lock = _pins(REPO / "requirements.lock")
    differ = {
        n: (v, lock.get(n)) for n, v in _pins(REPO / image / "requirements.txt").items() if n in lock and lock[n] != v
    }
    assert not differ, f"{image}/requirements.txt vs requirements.lock: {differ}"


def _user(dockerfile: Path) -> list[int]:
    """uid (and gid, when given) of the last USER line."""
    users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
    return [int(x) for x in users[-1].split(":")]


@pytest.mark.parametrize("image", ["trainer-image", "router-image"])
def test_pods_run_as_the_user_their_image_is_built_with(image):
    """The trainer's and router's pods set runAsUser (restricted Pod Security); a pod that runs
    as another uid than the image's USER cannot write what the image's user owns."""
    from tuneroute_operator.builders.common import RESTRICTED_POD

    user = _user(REPO / image / "Dockerfile")
    assert user[0] == RESTRICTED_POD["runAsUser"] and user[1:] in ([], [RESTRICTED_POD["runAsGroup"]])


def test_the_operator_pod_runs_as_the_user_its_image_is_built_with():
    chart = (REPO / "charts" / "tuneroute" / "templates" / "deployment.yaml").read_text()
    uid = int(next(line.split(":")[1] for line in chart.splitlines() if line.strip().startswith("runAsUser:")))
    assert _user(REPO / "operator" / "Dockerfile")[0] == uid
