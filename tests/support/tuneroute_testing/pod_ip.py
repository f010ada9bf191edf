"""A host process standing in for a pod on a kwok node, reachable at that pod's IP from the cluster.

kwok gives its pods IPs (from its --cidr, 10.244.0.0/16) that nothing answers on, yet Services send
their traffic there: kube-proxy on the real node rewrites a Service's address to its endpoints'. This
machine takes such a pod's IP (a /32 on its loopback) and the real node's network namespace routes it
to this machine (tests/cluster/node.sh: the namespace's eth0 is a veth whose host end is HOST_IP).
A process listening on IP:containerPort here is then what a router pod reaches through the Service,
as it would reach the pod's container.

    ip = endpoint_ip(cp, "default", "served-tiny")   # the ready address behind the Service
    take_pod_ip(cp.node, ip)                         # this machine answers for it
    release_pod_ip(ip)                               # and gives it back (the node's route dies with it)

Root only (it changes this machine's addresses). Standard library only. VllmServer(host=ip)
listens on such an address.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .control_plane import ControlPlane
from .node import RealNode


def endpoint_ip(cp: ControlPlane, namespace: str, service: str) -> str | None:
    """The one ready endpoint address of a Service (its EndpointSlices), None until there is
    exactly one: what kube-proxy sends the Service's traffic to."""
    slices = cp.get("endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}")["items"]
    ready = {
        address
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
        for address in e.get("addresses") or []
    }
    return ready.pop() if len(ready) == 1 else None


def take_pod_ip(node: RealNode, ip: str) -> None:
    """Make this machine answer for `ip`: a /32 on the loopback, and a route to this machine for it
    in the node's network namespace (the pods' traffic leaves through there). Idempotent."""
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    if f" {ip}/32 " not in have.stdout:
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{node.netns}", "ip", "route", "replace", f"{ip}/32", "via", node.host_ip],
        check=True,
    )


def release_pod_ip(ip: str) -> None:
    """Drop `ip` from the loopback (the node's route goes with its namespace, or is harmless)."""
    subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], capture_output=True, check=False)


def release_recorded(record: Path) -> None:
    """Release every IP listed in `record` (one a line), then remove it."""
    if record.exists():
        for ip in record.read_text().split():
            release_pod_ip(ip)
        record.unlink()


__all__ = ["endpoint_ip", "release_pod_ip", "release_recorded", "take_pod_ip"]
