"""Several ranks for one FineTuneJob: the torchrun command, the Indexed Job, its headless Service.

`resources.gpus` is ranks per pod (torchrun's --nproc-per-node; 0 GPUs = one CPU rank) and
`resources.nodes` the pods. One rank in all keeps the plain single-process trainer. Several ranks
in one pod run torchrun standalone. Several pods are what Kubeflow Trainer and JobSet render: an
Indexed Job (completions = parallelism = nodes), a headless Service giving pod i the stable name
`<job>-<i>.<service>`, and a c10d rendezvous hosted by pod 0. torchrun's c10d rendezvous hands
out ranks by arrival and ignores --node-rank, so none is passed: the trainer decides who writes by
global rank. The rendezvous id is the Job's uid, new for every attempt.

All or nothing: with several pods the Job tolerates no pod failure (backoffLimit 0): one failed
pod fails the Job, the Job controller stops the others, and the operator starts the next attempt
as a new Job, `<name>-a<N>`, every rank resuming from the last checkpoint (status/gang.py). A new
name gives its pods new DNS names (a stopping pod of the last attempt never answers for pod 0)
and keeps each failed attempt's pods to read. Exit code 2 (invalid input) still fails at once
through the pod failure policy.
"""

from __future__ import annotations

from typing import Any

from ..api.finetunejob import FineTuneJobSpec
from .common import Owner

RENDEZVOUS_PORT = 29400
# A started pod waits this long in the rendezvous for the others (image pulls, a busy scheduler)
# before it gives up; without gang scheduling it holds its GPUs meanwhile.
RENDEZVOUS_JOIN_TIMEOUT = 1800
# Time a rank has, after SIGTERM, to save its checkpoint shard; under the pod's grace period (120 s).
SHUTDOWN_TIMEOUT = 100
ATTEMPT = "tuneroute.io/attempt"
# Labels a FineTuneJob passes on to its Job for a batch scheduler (Kueue admits the whole Job).
SCHEDULING_LABEL_PREFIXES = ("kueue.x-k8s.io/",)


def ranks_per_pod(spec: FineTuneJobSpec) -> int:
    return max(spec.resources.gpus, 1)


def ranks(spec: FineTuneJobSpec) -> int:
    return spec.resources.nodes * ranks_per_pod(spec)


def gang(spec: FineTuneJobSpec) -> bool:
    """Several pods that live and die together."""
    return spec.resources.nodes > 1


def service_name(owner: Owner) -> str:
    return f"{owner.name}-ranks"


def job_name(owner: Owner, attempt: int) -> str:
    """The Job of an attempt: the first is named like its FineTuneJob, retries of a set of pods `-a<N>`."""
    return owner.name if attempt <= 1 else f"{owner.name}-a{attempt}"


def torchrun_args(owner: Owner, spec: FineTuneJobSpec, config_path: str, job: str) -> list[str]:
    """Arguments of `python -m tuneroute_trainer.torchrun` (torchrun's own, plus the trainer's)."""
    per_pod = ranks_per_pod(spec)
    if gang(spec):
        host = f"{job}-0.{service_name(owner)}"  # pod 0 of the Indexed Job `job`
        launch = [
            f"--nnodes={spec.resources.nodes}",
            f"--nproc-per-node={per_pod}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={host}:{RENDEZVOUS_PORT}",
            "--rdzv-id=$(TUNEROUTE_RDZV_ID)",
            f"--rdzv-conf=join_timeout={RENDEZVOUS_JOIN_TIMEOUT}",
        ]
    else:
        launch = ["--standalone", f"--nproc-per-node={per_pod}"]
    # No restarts inside a pod: a failed rank fails the pod, and the retry restarts every rank.
    launch += ["--max-restarts=0", f"--shutdown-timeout={SHUTDOWN_TIMEOUT}"]
    return [*launch, "-m", "tuneroute_trainer", "--config", config_path]


def container_fields(owner: Owner, spec: FineTuneJobSpec, config_path: str, job: str) -> dict[str, Any]:
    """command/args of the trainer container: plain for one rank, torchrun for several."""
    if ranks(spec) == 1:
        return {"args": ["--config", config_path]}
    args = torchrun_args(owner, spec, config_path, job)
    return {"command": ["python", "-m", "tuneroute_trainer.torchrun"], "args": args}


def env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    if not gang(spec):
        return []
    # Every pod of one Job gets the same id, and each attempt (a new Job) a new one.
    uid = "metadata.labels['batch.kubernetes.io/controller-uid']"
    return [{"name": "TUNEROUTE_RDZV_ID", "valueFrom": {"fieldRef": {"fieldPath": uid}}}]


def job_fields(spec: FineTuneJobSpec) -> dict[str, Any]:
    """What an Indexed Job of `nodes` pods adds to the Job spec (nothing for one pod)."""
    if not gang(spec):
        return {}
    n = spec.resources.nodes
    return {"completionMode": "Indexed", "completions": n, "parallelism": n, "backoffLimit": 0}


def pod_fields(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any]:
    """Pod i is `<job>-i.<service>` in DNS (the Job sets the hostname, the subdomain names the Service)."""
    return {"subdomain": service_name(owner)} if gang(spec) else {}


def service(meta: dict[str, Any], selector: dict[str, str]) -> dict[str, Any]:
    """Headless: no virtual IP, one DNS record per pod, published before the pod is ready (the
    rendezvous runs before any readiness could be known)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def scheduling_labels(labels: dict[str, str] | None) -> dict[str, str]:
    """The FineTuneJob's labels meant for a batch scheduler (Kueue's queue and priority), for its Job."""
    return {k: v for k, v in (labels or {}).items() if k.startswith(SCHEDULING_LABEL_PREFIXES)}


def shared_storage_problem(spec: FineTuneJobSpec, claims: dict[str, dict[str, Any] | None]) -> str | None:
    """Why the claims cannot serve pods on several nodes (None if they can, or cannot be known yet).

    `claims`: claim name -> the PersistentVolumeClaim (None when it does not exist yet: then the
    pods will say so themselves)."""
    if not gang(spec):
        return None
    needs = [("spec.output.pvc", spec.output.pvc, {"ReadWriteMany"})]
    for field, src in (("spec.baseModel.pvc", spec.base_model), ("spec.dataset.pvc", spec.dataset)):
        if src.pvc:
            needs.append((field, src.pvc, {"ReadOnlyMany", "ReadWriteMany"}))
    for field, name, allowed in needs:
        pvc = claims.get(name)
        if pvc is None:
            continue
        modes = set((pvc.get("spec") or {}).get("accessModes") or [])
        if not modes & allowed:
            want = " or ".join(sorted(allowed))
            return (
                f"{field}: claim {name} is {', '.join(sorted(modes)) or 'without access modes'}; "
                f"resources.nodes {spec.resources.nodes} puts pods on several nodes, which all mount it: "
                f"it must be {want} (or set resources.nodes to 1)"
            )
    return None


def claim_names(spec: FineTuneJobSpec) -> list[str]:
    return [c for c in (spec.output.pvc, spec.base_model.pvc, spec.dataset.pvc) if c]
