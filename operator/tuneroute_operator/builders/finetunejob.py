"""FineTuneJob -> trainer ConfigMap, ServiceAccount/Role/RoleBinding, batch/v1 Job (and, for
several pods, the headless Service of their ranks: see builders/distributed.py); once the adapter is
written, the parity gate's ConfigMap and verify Job."""

from __future__ import annotations

import hashlib
import json
import posixpath
from importlib.resources import files
from typing import Any

import yaml

from tuneroute_trainer.config import (
    AdapterOutput,
    DatasetSource,
    GrpoSettings,
    ModelSource,
    PythonReward,
    ReportSpec,
    RewardSpec,
    RolloutSpec,
    TrainerConfig,
    VllmRollouts,
)
from tuneroute_trainer.config import GrpoSpec as TrainerGrpo

from .. import GROUP
from ..api.finetunejob import FineTuneJobSpec, GrpoSpec
from ..settings import Settings
from . import distributed
from .common import (
    CONFIG_DIR,
    CONFIG_HASH,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    MergePatch,
    Owner,
    content_hash,
    labels,
    metadata,
)

CONFIG_FILE = "trainer.yaml"
PVC_ROOT = "/mnt/pvc"
# The hub download cache (HF_HOME): its own emptyDir over /tmp/hf, sized by spec.resources.modelCache.
MODEL_CACHE = "/tmp/hf"
# Scratch space besides the model cache (/tmp: tokenizer and dataset caches, torch's compile cache).
TMP_SIZE = "8Gi"
REWARDS_DIR = "/etc/tuneroute-rewards"  # <i>/<key>: the ConfigMap key of python reward i
ADAPTERS_DIR = "/adapters"  # shared by the trainer and the vLLM sidecar: one adapter directory per policy version
VLLM_PORT = 8000
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max-lora-rank values vLLM accepts
# Exit code the trainer uses for invalid input: retrying cannot help, so the Job fails at once.
EXIT_INVALID_INPUT = 2


def trainer_name(owner: Owner) -> str:
    return f"{owner.name}-trainer"


def default_output_path(name: str) -> str:
    return f"adapters/{name}"


def verify_name(owner: Owner) -> str:
    return f"{owner.name}-verify"


def adapter_name(owner: Owner, spec: FineTuneJobSpec) -> str:
    """<stem>-<8 hex digits of the uid and spec>: a retrained job (a new object) serves under a new
    name, so vLLM's prefix cache, keyed by adapter name, never hands out the old adapter's entries.
    Computed once and kept in status.adapterName (reconcile passes that back in), so a later
    change of the CRD's defaults cannot rename a job's adapter."""
    stem = (spec.output.adapter_name or owner.name)[:54].rstrip("-")
    identity = spec.model_dump(mode="json", by_alias=True, exclude={"suspend"})
    digest = hashlib.sha256(f"{owner.uid}:{json.dumps(identity, sort_keys=True)}".encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def output_path(spec: FineTuneJobSpec, name: str) -> str:
    """The adapter's directory in the output claim; `name` is the versioned adapter name."""
    return spec.output.path or default_output_path(name)


def merged_path(spec: FineTuneJobSpec, name: str) -> str | None:
    return posixpath.join(output_path(spec, name), "merged") if spec.output.merge else None


def _on_pvc(claim: str, path: str) -> str:
    return posixpath.join(PVC_ROOT, claim, path)


def _reward_path(i: int, key: str) -> str:
    return posixpath.join(REWARDS_DIR, str(i), key)


def grpo_config(grpo: GrpoSpec) -> TrainerGrpo:
    """The trainer's grpo section: python rewards become paths (mounted ConfigMap keys), the vLLM sidecar a URL."""
    rewards = []
    for i, r in enumerate(grpo.rewards):
        fields = r.model_dump(exclude={"python"}, exclude_none=True)
        if r.python is not None:
            fields["python"] = PythonReward(path=_reward_path(i, r.python.key), function=r.python.function)
        rewards.append(RewardSpec(**fields))
    server = None
    if grpo.rollouts.vllm is not None:
        server = VllmRollouts(url=f"http://127.0.0.1:{VLLM_PORT}", adapter_dir=ADAPTERS_DIR)
    rollouts = RolloutSpec(engine=grpo.rollouts.engine, vllm=server)
    settings = grpo.model_dump(include=set(GrpoSettings.model_fields))
    return TrainerGrpo(**settings, rewards=rewards, rollouts=rollouts)


def trainer_config(owner: Owner, spec: FineTuneJobSpec, name: str) -> TrainerConfig:
    """The trainer's own config model: the one contract between operator and trainer."""
    bm, ds = spec.base_model, spec.dataset
    # The spec's rules guarantee a pvc comes with a path (and id without pvc otherwise).
    data_path = _on_pvc(ds.pvc, ds.path) if ds.pvc and ds.path else None
    return TrainerConfig(
        model=ModelSource(id=bm.id, revision=bm.revision)
        if bm.id
        else ModelSource(path=_on_pvc(bm.pvc or "", bm.path or "")),
        dataset=DatasetSource(id=ds.id, path=data_path, split=ds.split, format=ds.format),
        method=spec.method,
        lora=spec.lora,
        training=spec.training,
        checkpoint=spec.checkpoint,
        grpo=grpo_config(spec.grpo) if spec.grpo else None,
        output=AdapterOutput(
            dir=_on_pvc(spec.output.pvc, output_path(spec, name)),
            adapter_name=name,
            run_id=owner.uid,
            merge=spec.output.merge,
        ),
        evaluation=spec.evaluation,
        report=ReportSpec(namespace=owner.namespace, name=owner.name),
    )


def configmap(owner: Owner, spec: FineTuneJobSpec, name: str) -> dict[str, Any]:
    config = trainer_config(owner, spec, name).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, trainer_name(owner), "trainer", {CONFIG_HASH: content_hash(config)}),
        "data": {CONFIG_FILE: yaml.safe_dump(config, sort_keys=False)},
    }


def rbac(owner: Owner) -> list[dict[str, Any]]:
    """A ServiceAccount that may patch this one FineTuneJob's status (progress reports), nothing else."""
    name = trainer_name(owner)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(owner, name, "trainer")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(owner, name, "trainer"),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["finetunejobs/status"],
                    "resourceNames": [owner.name],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(owner, name, "trainer"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def _volumes(owner: Owner, spec: FineTuneJobSpec) -> tuple[list[dict], list[dict]]:
    claims: dict[str, bool] = {spec.output.pvc: False}  # claim -> read-only
    for src in (spec.base_model, spec.dataset):
        if src.pvc:
            claims.setdefault(src.pvc, True)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": trainer_name(owner)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if spec.base_model.id:  # downloaded from the hub: a bounded cache (a model from a claim needs none)
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": spec.resources.model_cache}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE})
    for i, (claim, read_only) in enumerate(claims.items()):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": f"pvc-{i}", "mountPath": posixpath.join(PVC_ROOT, claim), "readOnly": read_only})
    if spec.grpo:
        for i, r in enumerate(spec.grpo.rewards):
            if r.python is not None:
                items = [{"key": r.python.key, "path": r.python.key}]
                volumes.append({"name": f"reward-{i}", "configMap": {"name": r.python.config_map, "items": items}})
                mounts.append(
                    {"name": f"reward-{i}", "mountPath": posixpath.dirname(_reward_path(i, "x")), "readOnly": True}
                )
        if spec.grpo.rollouts.vllm is not None:
            volumes.append({"name": "adapters", "emptyDir": {}})
            mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
    return volumes, mounts


def vllm_sidecar(spec: FineTuneJobSpec, image_pull_policy: str, mounts: list[dict], env: list[dict]) -> dict[str, Any]:
    """The rollout server of method grpo with engine vllm: a native sidecar (an init container that keeps
    running, started and probed before the trainer, stopped after it) serving the base model on localhost."""
    assert spec.grpo is not None and spec.grpo.rollouts.vllm is not None
    v, grpo, bm = spec.grpo.rollouts.vllm, spec.grpo, spec.base_model
    model = bm.id if bm.id else _on_pvc(bm.pvc or "", bm.path or "")
    rank = next((r for r in VLLM_LORA_RANKS if r >= spec.lora.rank), VLLM_LORA_RANKS[-1])
    args = [
        "--model", model, "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(VLLM_PORT),
        "--enable-lora", "--max-lora-rank", str(rank),
        # the staleness window's versions, plus the next one loaded before the oldest is unloaded
        "--max-loras", str(grpo.max_staleness + 2),
        # log-probs after temperature: what trl's importance ratio compares the trainer's with
        "--logprobs-mode", "processed_logprobs",
        "--max-model-len", str(v.max_model_len), "--gpu-memory-utilization", str(v.gpu_memory_utilization),
    ]  # fmt: skip
    if bm.id:
        args += ["--revision", bm.revision]
    if spec.lora.experts:
        args.append("--enable-mixed-moe-lora-format")  # expert LoRA arrives as PEFT's fused 3D tensors
    gpus = {spec.resources.gpu_resource: str(v.gpus)} if v.gpus else {}
    return {
        "name": "vllm",
        "image": v.image,
        "imagePullPolicy": image_pull_policy,
        "restartPolicy": "Always",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args + list(v.extra_args),
        "env": [*env, {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"}],
        "resources": {"requests": dict(gpus), "limits": dict(gpus)} if gpus else {},
        # scratch, shared memory, the hub cache, the adapters, the model's claim (read-only); not config, rewards, output
        "volumeMounts": [
            m
            for m in mounts
            if m["name"] in ("tmp", "dshm", "model-cache", "adapters")
            or (m.get("readOnly") is True and m["name"].startswith("pvc-"))
        ],
        "securityContext": RESTRICTED_CONTAINER,
        # the trainer starts once the server answers; loading a large model can take many minutes
        "startupProbe": {
            "httpGet": {"path": "/health", "port": VLLM_PORT, "host": "127.0.0.1"},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
    }


def _resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    r = spec.resources
    amounts: dict[str, str] = {}
    if r.gpus:
        amounts[r.gpu_resource] = str(r.gpus)
    if r.cpu:
        amounts["cpu"] = r.cpu
    if r.memory:
        amounts["memory"] = r.memory
    out: dict[str, Any] = {"requests": dict(amounts), "limits": dict(amounts)}
    # Requested, not limited: the scheduler puts the pod on a node with room for the model, and
    # each emptyDir's sizeLimit bounds what it may fill.
    out["requests"]["ephemeral-storage"] = r.model_cache if spec.base_model.id else TMP_SIZE
    return out


def _env(spec: FineTuneJobSpec) -> tuple[list[dict], list[dict]]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": MODEL_CACHE},
        {"name": "TUNEROUTE_TERMINATION_LOG", "value": "/dev/termination-log"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *distributed.env(spec),
    ]
    if spec.secrets.hf_token:
        ref = spec.secrets.hf_token
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env_from = [{"secretRef": {"name": spec.secrets.storage.name}}] if spec.secrets.storage else []
    return env, env_from


def job(
    owner: Owner,
    spec: FineTuneJobSpec,
    settings: Settings,
    config_hash: str,
    attempt: int = 1,
    scheduling: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The training Job. `attempt`: which one, for several pods (each attempt is a new Job);
    `scheduling`: labels for a batch scheduler (Kueue), from the FineTuneJob's own."""
    volumes, mounts = _volumes(owner, spec)
    env, env_from = _env(spec)
    name = distributed.job_name(owner, attempt) if distributed.gang(spec) else owner.name
    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        **distributed.container_fields(owner, spec, posixpath.join(CONFIG_DIR, CONFIG_FILE), name),
        "env": env,
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "serviceAccountName": trainer_name(owner),
        "restartPolicy": "Never",
        # Room for the trainer to save a checkpoint after SIGTERM (preemption, suspend).
        "terminationGracePeriodSeconds": 120,
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "volumes": volumes,
        **distributed.pod_fields(owner, spec),
    }
    if spec.grpo and spec.grpo.rollouts.vllm is not None:
        pod_spec["initContainers"] = [vllm_sidecar(spec, settings.image_pull_policy, mounts, env)]
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.resources.tolerations]
    job_spec: dict[str, Any] = {
        "suspend": spec.suspend,
        "backoffLimit": spec.backoff_limit,
        **distributed.job_fields(spec),
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [EXIT_INVALID_INPUT]},
                },
                # Preempted or evicted pods resume from their checkpoint without using up a retry.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {
            "metadata": {"labels": labels(owner, "trainer"), "annotations": {CONFIG_HASH: config_hash}},
            "spec": pod_spec,
        },
    }
    if scheduling and not spec.suspend:
        # Kueue creates such a Job suspended and unsuspends it once the whole Job fits: the
        # operator sets suspend only when the user asks for it, so the two never fight over it.
        del job_spec["suspend"]
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    annotations = {CONFIG_HASH: config_hash}
    if distributed.gang(spec):
        annotations[distributed.ATTEMPT] = str(attempt)
    meta = metadata(owner, name, "trainer", annotations)
    meta["labels"] |= scheduling or {}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def job_update(
    owner: Owner, spec: FineTuneJobSpec, scheduling: dict[str, str] | None = None, name: str | None = None
) -> MergePatch:
    """What may change in an existing Job: suspend. Its pod template is immutable, and may come
    from an older operator whose template differs: re-applying the whole Job would be refused.
    A Job a batch scheduler admits (`scheduling` labels) is unsuspended by that scheduler: only a
    user's suspend is passed on."""
    job_spec = {"suspend": True} if scheduling and spec.suspend else {} if scheduling else {"suspend": spec.suspend}
    return MergePatch(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name or owner.name, "namespace": owner.namespace},
            "spec": job_spec,
        }
    )


def ranks_service(owner: Owner) -> dict[str, Any]:
    """The headless Service that gives each pod of a several-pod Job its DNS name."""
    meta = metadata(owner, distributed.service_name(owner), "trainer")
    return distributed.service(meta, labels(owner, "trainer"))


def children(
    owner: Owner,
    spec: FineTuneJobSpec,
    settings: Settings,
    name: str,
    attempt: int = 1,
    scheduling: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The training children of a FineTuneJob, in creation order (the Job last, once its inputs
    exist). `name`: the versioned adapter name (status.adapterName)."""
    cm = configmap(owner, spec, name)
    service = [ranks_service(owner)] if distributed.gang(spec) else []
    config_hash = cm["metadata"]["annotations"][CONFIG_HASH]
    return [cm, *rbac(owner), *service, job(owner, spec, settings, config_hash, attempt, scheduling)]


# The parity gate ------------------------------------------------------------------------------
# It runs in the pinned vLLM image, not the trainer's: the gate must read the adapter with the
# serving engine's own code and version, and the trainer's torch/transformers are not vLLM's. The
# image has no tuneroute code, so the gate is one script (tuneroute_operator/gate/verify_adapter.py,
# vLLM/torch/safetensors only) mounted from a ConfigMap; its verdict comes back as the pod's
# termination message (JSON), which needs no API access from the pod.

GATE_DIR = "/etc/tuneroute-gate"
GATE_FILE = "verify_adapter.py"
# Exit codes of the gate: 1 = not verified, 2 = bad input; both are final (3 = error: retried).
EXIT_NOT_VERIFIED = (1, 2)


def gate_script() -> str:
    return files("tuneroute_operator.gate").joinpath(GATE_FILE).read_text()


def gate_configmap(owner: Owner) -> dict[str, Any]:
    script = gate_script()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, verify_name(owner), "verify", {CONFIG_HASH: content_hash(script)}),
        "data": {GATE_FILE: script},
    }


def verify_args(spec: FineTuneJobSpec, name: str) -> list[str]:
    """The gate's command line (the base model and the adapter as the verify pod mounts them)."""
    bm, v = spec.base_model, spec.verify
    model = bm.id if bm.id else _on_pvc(bm.pvc or "", bm.path or "")
    args = [
        posixpath.join(GATE_DIR, GATE_FILE),
        "--adapter",
        _on_pvc(spec.output.pvc, output_path(spec, name)),
        "--model",
        model or "",
        "--name",
        name,
        "--dtype",
        v.dtype,
        "--outputs",
        v.outputs,
    ]
    if bm.id:
        args += ["--revision", bm.revision]
    if v.max_lora_rank:
        args += ["--max-lora-rank", str(v.max_lora_rank)]
    if v.lora_target_modules:
        args += ["--lora-target-modules", *v.lora_target_modules]
    return args


def verify_job(owner: Owner, spec: FineTuneJobSpec, settings: Settings, name: str) -> dict[str, Any]:
    v = spec.verify
    claims: dict[str, bool] = {spec.output.pvc: True}
    if spec.base_model.pvc:
        claims.setdefault(spec.base_model.pvc, True)
    volumes: list[dict[str, Any]] = [
        {"name": "gate", "configMap": {"name": verify_name(owner)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "gate", "mountPath": GATE_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for i, claim in enumerate(claims):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"pvc-{i}", "mountPath": posixpath.join(PVC_ROOT, claim), "readOnly": True})
    env, _ = _env(spec)
    amounts = {k: str(q) for k, q in v.resources.items()}
    if v.gpus:
        amounts[spec.resources.gpu_resource] = str(v.gpus)
    container: dict[str, Any] = {
        "name": "verify",
        "image": v.image or settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python3"],
        "args": verify_args(spec, name),
        "env": env,
        "resources": {"requests": amounts, "limits": dict(amounts)} if amounts else {},
        "volumeMounts": mounts,
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": False},  # vLLM writes caches
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the verdict leaves through the termination message
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.resources.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, verify_name(owner), "verify"),
        "spec": {
            "backoffLimit": 2,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "verify", "operator": "In", "values": list(EXIT_NOT_VERIFIED)},
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {"metadata": {"labels": labels(owner, "verify")}, "spec": pod_spec},
        },
    }


def verify_children(owner: Owner, spec: FineTuneJobSpec, settings: Settings, name: str) -> list[dict[str, Any]]:
    """The gate's ConfigMap and Job, created once the training Job has completed."""
    return [gate_configmap(owner), verify_job(owner, spec, settings, name)]
