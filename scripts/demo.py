"""The demo behind scripts/demo.sh: every step a user would take, on a local control plane.

kwok nodes run no containers, so the two workloads run on this machine instead: the operator
(authenticated as the chart's ServiceAccount) and the trainer (a tiny random Qwen3-MoE on the
CPU, reporting progress into the FineTuneJob exactly as its pod would). The trainer pod that the
Job created is then finished with the trainer's exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.operator_process import OperatorProcess, service_account_kubeconfig

DIR = Path(os.environ.get("TUNEROUTE_DEMO_DIR", "/tmp/tuneroute-demo"))
NS = "default"


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = cp.kubectl(*args).stdout
    print(out, flush=True)
    return out


def main() -> None:
    step("Start the local control plane (etcd, kube-apiserver, controller manager, scheduler, kwok GPU nodes)")
    cp = ControlPlane.up(DIR)
    show(cp, "get", "nodes", "-L", "nvidia.com/gpu.present")

    step("helm install the chart (CRDs, RBAC, operator Deployment scaled to 0: the operator runs here)")
    cp.kubectl("create", "namespace", "tuneroute-system", check=False)
    cp.wait_for_default_service_account("tuneroute-system")
    print(
        cp.helm(
            "upgrade",
            "--install",
            "tuneroute",
            str(REPO / "charts/tuneroute"),
            "-n",
            "tuneroute-system",
            "--set",
            "replicas=0",
            "--wait",
        ).stdout
    )

    step("Run the operator with the chart's ServiceAccount")
    old = DIR / "operator.pid"
    if old.exists():
        subprocess.run(["kill", old.read_text().strip()], check=False)
    kubeconfig = service_account_kubeconfig(cp, "tuneroute-system", "tuneroute", DIR / "operator.kubeconfig")
    op = OperatorProcess(kubeconfig, DIR / "operator.log").start()
    old.write_text(str(op.proc.pid))
    print(f"operator pid {op.proc.pid}, log {DIR / 'operator.log'}, metrics http://127.0.0.1:{op.metrics_port}/metrics")

    step("Apply examples/ (plus a hostPath PersistentVolume for the adapters claim: no provisioner here)")
    # A second run starts from scratch: a finished FineTuneJob cannot be re-run (its spec is immutable).
    cp.kubectl("-n", NS, "delete", "-f", str(REPO / "examples"), "--ignore-not-found", "--wait=true", timeout=180)
    cp.kubectl("delete", "pv", "demo-adapters", "--ignore-not-found", "--wait=true")
    shutil.rmtree(DIR / "pv", ignore_errors=True)  # the adapter and checkpoints of an earlier run
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "demo-adapters"},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "hostPath": {"path": str(DIR / "pv")},
                    "claimRef": {"namespace": NS, "name": "tuneroute-adapters"},
                },
            }
        ),
    )
    print(cp.kubectl("-n", NS, "apply", "-f", str(REPO / "examples")).stdout)
    wait_until(lambda: cp.get("pods", "-n", NS, "-l", "job-name=qwen3-support")["items"], 60, "the trainer pod")
    wait_until(
        lambda: (cp.get("ftj", "qwen3-support", "-n", NS).get("status") or {}).get("phase") == "Running", 60, "Running"
    )
    show(cp, "get", "tuneroute", "-n", NS)
    show(
        cp,
        "get",
        "jobs,pods,deployments,services,configmaps",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/managed-by=tuneroute-operator",
        "-o",
        "wide",
    )

    step("Train: the real trainer on a tiny random Qwen3-MoE (CPU), reporting progress into the FineTuneJob")
    from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, write_config

    model = save_tiny_model("qwen3_moe", DIR / "tiny-qwen3-moe", servable=True)
    adapter_name = cp.get("ftj", "qwen3-support", "-n", NS)["status"]["adapterName"]  # <job>-<hash>
    cfg = trainer_config(
        model,
        DIR / "pv" / "adapters" / adapter_name,
        training={"maxSteps": 40},
        report={"namespace": NS, "name": "qwen3-support", "intervalSeconds": 1},
    )
    config = write_config(DIR / "trainer.json", cfg)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "TUNEROUTE_TERMINATION_LOG": str(DIR / "termination-log")}
    with open(DIR / "trainer.log", "w") as log:
        train = subprocess.run(
            [sys.executable, "-m", "tuneroute_trainer", "--config", str(config)],
            env=env,
            cwd=REPO / "trainer-image",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    lines = (DIR / "trainer.log").read_text().splitlines()
    progress = [line for line in lines if '"progress"' in line]
    print("\n".join(progress[:2] + ["..."] + progress[-1:] + lines[-1:]))
    print(f"(full trainer log: {DIR / 'trainer.log'})")
    show(cp, "get", "ftj", "-n", NS, "-o", "wide")

    step(f"Finish the trainer pod with the trainer's exit code ({train.returncode}); the operator follows the Job")
    pod = cp.get("pods", "-n", NS, "-l", "job-name=qwen3-support")["items"][0]["metadata"]["name"]
    message = (DIR / "termination-log").read_text() if (DIR / "termination-log").exists() else None
    cp.finish_pod(NS, pod, exit_code=train.returncode, message=message)
    phase = "Succeeded" if train.returncode == 0 else "Failed"
    wait_until(lambda: (cp.get("ftj", "qwen3-support", "-n", NS).get("status") or {}).get("phase") == phase, 60, phase)
    if phase == "Succeeded":
        from demo_serving import verify_example  # scripts/demo_serving.py

        verify_example(cp, NS, DIR / "pv", model, DIR)
    show(cp, "get", "tuneroute", "-n", NS)
    show(cp, "get", "mroute", "assistant", "-n", NS, "-o", "jsonpath={.status.backendStatus}")
    print()
    uid = cp.get("ftj", "qwen3-support", "-n", NS)["metadata"]["uid"]
    selector = f"involvedObject.uid={uid}"
    wait_until(lambda: len(cp.get("events", "-n", NS, "--field-selector", selector)["items"]) >= 2, 30, "the Events")
    show(cp, "get", "events", "-n", NS, "--field-selector", selector, "--sort-by=.lastTimestamp")

    from demo_serving import serve_locally

    serve_locally(cp, NS, DIR / "pv", DIR)

    step("Done")
    print(f"The cluster is still up:  source {DIR}/env && kubectl get tuneroute")
    print(f"Adapters written to:      {DIR / 'pv' / 'adapters'}")
    print("Stop everything:          scripts/demo.sh --down")


if __name__ == "__main__":
    main()
