"""The real node of the local cluster (tests/cluster/node.sh) from Python: its addresses, the
images on it, and what only the machine it runs on can do to its containers.

    node = RealNode.of(cluster_dir)           # None when the cluster runs without one
    refs = node.import_images("operator", "router")   # built when missing, then imported
    node.host_ip                              # where pods reach this machine (fake backends)
    node.kill_container(pod, "operator")      # SIGKILL its process, as a crash would

Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import REPO

IMAGES = REPO / "scripts" / "images.sh"


@dataclass(frozen=True)
class RealNode:
    cluster_dir: Path
    name: str
    host_ip: str  # the host end of the node's network: the API server and host processes pods call
    node_ip: str
    dns_ip: str
    pod_cidr: str
    service_cidr: str
    netns: str  # the network namespace the node's containerd, kubelet and pods live in

    @classmethod
    def of(cls, cluster_dir: Path) -> RealNode | None:
        env = Path(cluster_dir) / "node" / "net.env"
        if not env.exists():
            return None
        values = dict(line.split("=", 1) for line in env.read_text().split() if "=" in line)
        return cls(
            cluster_dir=Path(cluster_dir),
            name=values["NODE_NAME"],
            host_ip=values["HOST_IP"],
            node_ip=values["NODE_IP"],
            dns_ip=values["DNS_IP"],
            pod_cidr=values["POD_CIDR"],
            service_cidr=values["SERVICE_CIDR"],
            netns=values["NETNS"],
        )

    @property
    def containerd_socket(self) -> Path:
        return self.cluster_dir / "node" / "containerd" / "containerd.sock"

    def import_images(self, *names: str, timeout: float = 3600) -> dict[str, str]:
        """Build (when missing: minutes the first time) and import tuneroute's images into the
        node; returns {name: ref}. Progress goes to stderr as it happens."""
        return self.start_import(*names).wait(timeout)

    def start_import(self, *names: str) -> BackgroundImport:
        """import_images without waiting: for a large image the tests need later."""
        proc = subprocess.Popen(
            [str(IMAGES), "import", str(self.cluster_dir), *names],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,  # progress straight to the caller's stderr
            text=True,
            start_new_session=True,  # stop() ends buildah and ctr with it
        )
        return BackgroundImport(proc)

    def container_pid(self, container_id: str) -> int:
        """Host PID of a running container's main process ("containerd://ID" or ID)."""
        cid = container_id.removeprefix("containerd://")
        out = subprocess.run(
            ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", "tasks", "ls"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines()[1:]:
            task, pid, status = line.split()
            if task == cid:
                if status != "RUNNING":
                    raise RuntimeError(f"container {cid} is {status}")
                return int(pid)
        raise LookupError(f"no task for container {cid} on {self.name}")

    def kill_container(self, pod: dict, container: str) -> None:
        """SIGKILL a pod's container process from the host: a crash, not a shutdown (no
        SIGTERM, no grace period). The kubelet restarts it as the pod's restartPolicy says."""
        status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
        os.kill(self.container_pid(status["containerID"]), signal.SIGKILL)


@dataclass
class BackgroundImport:
    proc: subprocess.Popen

    def wait(self, timeout: float = 3600) -> dict[str, str]:
        """{name: ref} once the import is done; raises when it failed."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except BaseException:  # a timeout or Ctrl-C: its own session does not get the signal
            self.stop()
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"scripts/images.sh import failed ({self.proc.returncode}); see its output above")
        return dict(line.split("=", 1) for line in out.split())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)


def image_refs(*names: str) -> dict[str, str]:
    """The refs the images have or will have (nothing is built): scripts/images.sh ref."""
    return {
        n: subprocess.run([str(IMAGES), "ref", n], capture_output=True, text=True, check=True).stdout.strip()
        for n in names
    }


__all__ = ["RealNode", "image_refs"]
