"""Smoke tests of the local cluster itself (tests/cluster/up.sh: control plane, kwok stages, the real node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneroute_testing.control_plane import ControlPlane
from tuneroute_testing.k8s import apply, watch, watch_one

pytestmark = pytest.mark.cluster

K8S_VERSION = "v1.34.4"  # tests/cluster/build.sh pins it


def _job(name: str, backoff_limit: int = 0, gpus: int = 1) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "example.invalid/trainer:test",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                            }
                        ],
                    }
                },
            },
        }
    )


def _running_pod(cp: ControlPlane, ns: str, job: str, exclude=()) -> dict:
    def find(pods):
        running = [p for n, p in pods.items() if (p.get("status") or {}).get("phase") == "Running" and n not in exclude]
        return running[0] if running else None

    return watch(cp, "pods", ns, find, selector=f"job-name={job}", what=f"a Running pod of job {job}")


def _job_condition(cp: ControlPlane, ns: str, job: str, cond: str) -> dict:
    def holds(obj):
        return any(c["type"] == cond and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", []))

    return watch_one(cp, "jobs", ns, job, holds, what=f"job {job} {cond}")["status"]


def test_server_version(control_plane):
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION


def _gpu_pod(name: str, gpus: int) -> dict:
    limits = {"nvidia.com/gpu": str(gpus)}
    container = {"name": "c", "image": "example.invalid/x:1", "resources": {"limits": limits}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def test_gpu_pod_is_scheduled_and_running(control_plane, namespace):
    cp = control_plane
    apply(cp, namespace, _gpu_pod("gpu", 1))
    pod = watch_one(cp, "pods", namespace, "gpu", lambda p: (p.get("status") or {}).get("phase") == "Running")
    node = cp.get("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert pod["status"]["containerStatuses"][0]["state"].get("running")


def test_unschedulable_gpu_request_stays_pending(control_plane, namespace):
    # 9 GPUs fit on no node (8 each): the scheduler really accounts for nvidia.com/gpu.
    cp = control_plane
    apply(cp, namespace, _gpu_pod("too-big", 9))

    def unschedulable(pod):
        conds = (pod.get("status") or {}).get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds)

    watch_one(cp, "pods", namespace, "too-big", unschedulable)


def test_job_pod_exit_0_completes_job(control_plane, namespace):
    cp = control_plane
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=_job("ok"))
    pod = _running_pod(cp, namespace, "ok")
    cp.finish_pod(namespace, pod["metadata"]["name"], exit_code=0, message='{"adapter": "done"}')
    status = _job_condition(cp, namespace, "ok", "Complete")
    assert status["succeeded"] == 1
    pod = cp.get("pod", pod["metadata"]["name"], "-n", namespace)
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["message"] == '{"adapter": "done"}'


def test_job_pod_exit_1_fails_job(control_plane, namespace):
    cp = control_plane
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=_job("bad", backoff_limit=0))
    pod = _running_pod(cp, namespace, "bad")
    cp.finish_pod(namespace, pod["metadata"]["name"], exit_code=1, message="CUDA out of memory")
    status = _job_condition(cp, namespace, "bad", "Failed")
    assert status["failed"] == 1
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pod = cp.get("pod", pod["metadata"]["name"], "-n", namespace)
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (1, "Error", "CUDA out of memory")


def test_job_retries_up_to_backoff_limit(control_plane, namespace):
    # The Job controller's backoff between attempts is 10 s, then 20 s: ~35 s in all.
    cp = control_plane
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=_job("retry", backoff_limit=1))
    first = _running_pod(cp, namespace, "retry")["metadata"]["name"]
    cp.finish_pod(namespace, first, exit_code=2)
    second = _running_pod(cp, namespace, "retry", exclude={first})["metadata"]["name"]
    cp.finish_pod(namespace, second, exit_code=2)
    status = _job_condition(cp, namespace, "retry", "Failed")
    assert status["failed"] == 2


def test_deleting_owner_cascades(control_plane, namespace):
    # A ConfigMap owns a Job (as a FineTuneJob will): deleting the owner makes the
    # garbage collector delete the Job, and the Job's pod with it.
    cp = control_plane
    owner = json.loads(cp.kubectl("-n", namespace, "create", "configmap", "owner", "-o", "json").stdout)
    job = json.loads(_job("owned"))
    job["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(job))
    pod = _running_pod(cp, namespace, "owned")["metadata"]["name"]
    cp.kubectl("-n", namespace, "delete", "configmap", "owner", "--cascade=foreground", "--wait=false")
    cp.kubectl("-n", namespace, "wait", "--for=delete", "job/owned", f"pod/{pod}", "--timeout=60s", timeout=70)


# --- the real node ------------------------------------------------------------------------------


def test_the_real_node_is_ready_and_takes_cpu_pods_while_gpu_nodes_keep_their_taint(control_plane):
    cp = control_plane
    node = cp.get("node", cp.node.name)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == K8S_VERSION
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert "nvidia.com/gpu" not in node["status"]["allocatable"]
    gpu_taints = {t["key"] for n in cp.get("nodes", "-l", "type=kwok")["items"] for t in n["spec"].get("taints", [])}
    assert gpu_taints == {"nvidia.com/gpu"}


def test_pods_on_the_real_node_resolve_service_names_and_reach_the_api_server(control_plane, namespace):
    """Cluster DNS (CoreDNS) and kube-proxy: a pod finds the `kubernetes` Service by its
    *.svc.cluster.local name and reads /version with its mounted ServiceAccount token."""
    cp = control_plane
    image = cp.node.import_images("router")["router"]
    script = (
        "import socket, ssl, urllib.request\n"
        "ip = socket.gethostbyname('kubernetes.default.svc.cluster.local')\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
        "ctx = ssl.create_default_context(cafile=sa + 'ca.crt')\n"
        "req = urllib.request.Request('https://kubernetes.default.svc/version',"
        " headers={'Authorization': 'Bearer ' + open(sa + 'token').read()})\n"
        "print(ip, urllib.request.urlopen(req, context=ctx, timeout=10).read().decode().count('gitVersion'))\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [{"name": "probe", "image": image, "command": ["python", "-c", script]}],
        },
    }
    apply(cp, namespace, pod)
    done = watch_one(
        cp,
        "pods",
        namespace,
        "probe",
        lambda p: (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        timeout=120,
        what="the probe pod to finish",
    )
    logs = cp.kubectl("-n", namespace, "logs", "probe").stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert done["spec"]["nodeName"] == cp.node.name
    service_ip = cp.get("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert logs.split() == [service_ip, "1"]


def test_down_removes_the_nodes_namespace_cgroups_mounts_and_processes():
    """A second cluster beside the suite's: up, then down leaves nothing of its node behind
    (its network namespace takes the bridge, veths and iptables rules with it)."""
    import subprocess
    import tempfile

    from tuneroute_testing.node import RealNode

    other = ControlPlane.up(Path(tempfile.mkdtemp(prefix="tr-other-", dir="/tmp")))  # a short path: unix sockets
    try:
        node = RealNode.of(other.dir)
        env = dict(line.split("=", 1) for line in (other.dir / "node" / "net.env").read_text().split())
        assert Path(f"/run/netns/{env['NETNS']}").exists()
        assert cp_ready(other, node.name)
    finally:
        other.down()
    assert not Path(f"/run/netns/{env['NETNS']}").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{env['CGROUP']}"))
    assert str(other.dir) not in Path("/proc/self/mounts").read_text()
    assert subprocess.run(["ip", "link", "show", env["HOST_IF"]], capture_output=True).returncode != 0
    assert subprocess.run(["pgrep", "-f", str(node.containerd_socket)], capture_output=True).returncode != 0
    assert not other.dir.exists()


def cp_ready(cp: ControlPlane, node: str) -> bool:
    conditions = cp.get("node", node)["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
