"""The local Kubernetes control plane (tests/cluster/up.sh) from Python.

Used by the session-scoped pytest fixture and by the demo script, so it knows
nothing of pytest. Standard library only.

    cp = ControlPlane.up()            # start one (or reuse one already running)
    cp.kubectl("get", "nodes")
    cp.finish_pod("default", "train-abc", exit_code=1, message="CUDA OOM")
    cp.node.import_images("router")   # the real node (node.py), None without one
    cp.down()

Set TUNEROUTE_KUBECONFIG to the kubeconfig of a cluster that is already running
to use it instead of starting one; down() then leaves it alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import CLUSTER_DIR as HERE
from .node import RealNode
from .process import wait_until

DEFAULT_DIR = Path(os.environ.get("TUNEROUTE_CLUSTER_DIR", "/tmp/tuneroute-cluster"))

# Annotations read by the kwok stages in kwok-stages.yaml.
EXIT_ANNOTATION = "tuneroute.io/kwok-exit"
MESSAGE_ANNOTATION = "tuneroute.io/kwok-message"


class ControlPlane:
    def __init__(self, kubeconfig: Path, bin_dir: Path, dir: Path | None = None, owned: bool = False):
        self.kubeconfig = Path(kubeconfig)
        self.bin_dir = Path(bin_dir)
        self.dir = dir  # state dir of a cluster we started, else None
        self.owned = owned  # True: down() stops it
        # The node where containers really run (CPU-only pods land there); None without one.
        self.node = RealNode.of(self.kubeconfig.parent)
        self.env = {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    @classmethod
    def up(cls, dir: str | os.PathLike | None = None, timeout: float = 3600) -> ControlPlane:
        """Start the control plane in `dir` (or reuse one), and return a handle.

        With TUNEROUTE_KUBECONFIG set, that cluster is used as is. Otherwise up.sh
        runs (it builds the binaries first if they are not cached: a cold build takes
        many minutes, hence the long timeout) and says "already up" if it is.
        """
        reuse = os.environ.get("TUNEROUTE_KUBECONFIG")
        if reuse:
            kubeconfig = Path(reuse).resolve()
            return cls(kubeconfig, _bin_dir(kubeconfig.parent), owned=False)
        d = Path(dir) if dir is not None else DEFAULT_DIR
        # up.sh's progress (a cold first run builds for many minutes) is passed on as it comes.
        proc = subprocess.Popen(
            [str(HERE / "up.sh"), str(d)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        err = []
        deadline = time.monotonic() + timeout
        for line in proc.stderr:
            err.append(line)
            sys.stderr.write(line)
            if time.monotonic() > deadline:
                proc.kill()
                break
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise RuntimeError(f"up.sh failed ({proc.returncode}):\n{''.join(err)[-4000:]}")
        kubeconfig = Path(out.strip().splitlines()[-1])
        # One that was already up (the demo's, say) is reused and left running by down().
        owned = not any("already up" in line for line in err)
        return cls(kubeconfig, _bin_dir(kubeconfig.parent), dir=kubeconfig.parent, owned=owned)

    def down(self) -> None:
        """Stop the cluster and remove its state, if this handle started it."""
        if self.owned and self.dir is not None:
            subprocess.run([str(HERE / "down.sh"), str(self.dir)], stdin=subprocess.DEVNULL, check=False)
            self.owned = False

    # --- command-line tools -------------------------------------------------
    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run a tool from the bin dir with this cluster's KUBECONFIG; text in and out."""
        exe = self.bin_dir / tool
        cmd = [str(exe) if exe.exists() else tool, *args]
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return self.run("helm", *args, input=input, check=check, timeout=timeout)

    def get(self, *args: str) -> dict:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    # --- helpers for tests ---------------------------------------------------
    def wait_for_default_service_account(self, namespace: str, timeout: float = 60) -> None:
        """Pods can be created in a new namespace only once the controller manager has
        made its `default` ServiceAccount (ServiceAccount admission is on)."""
        self.kubectl(
            "-n", namespace, "wait", "--for=create", "serviceaccount/default", f"--timeout={timeout:.0f}s",
            timeout=timeout + 10,
        )  # fmt: skip

    def finish_pod(self, namespace: str, pod_name: str, exit_code: int = 0, message: str | None = None) -> None:
        """End a Running pod on a kwok node: Succeeded for exit code 0, else Failed with
        that container exit code (reason "Error"); `message` becomes every container's
        terminated.message (what a termination-message file would give).
        The pod must be Running: kwok's stages act only on Running pods."""
        ann = [f"{EXIT_ANNOTATION}={int(exit_code)}"]
        if message is not None:
            ann.append(f"{MESSAGE_ANNOTATION}={message}")
        self.kubectl("-n", namespace, "annotate", "--overwrite", f"pod/{pod_name}", *ann)


def _bin_dir(state_dir: Path) -> Path:
    """The bin dir: TUNEROUTE_BIN_DIR, else the PATH written to up.sh's DIR/env,
    else build.sh's answer (a no-op when cached), else where kubectl is on PATH."""
    if os.environ.get("TUNEROUTE_BIN_DIR"):
        return Path(os.environ["TUNEROUTE_BIN_DIR"])
    env_file = state_dir / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export PATH="):
                return Path(line.removeprefix("export PATH=").split(":")[0])
    proc = subprocess.run([str(HERE / "build.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip().splitlines()[-1])
    kubectl = shutil.which("kubectl")
    if kubectl:
        return Path(kubectl).parent
    raise RuntimeError(f"no kubectl: build.sh failed:\n{proc.stderr[-2000:]}")


__all__ = ["EXIT_ANNOTATION", "MESSAGE_ANNOTATION", "ControlPlane", "wait_until"]
