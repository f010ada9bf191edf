"""Metadata helpers shared by the builders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .. import API_VERSION

MANAGED_BY = "tuneroute-operator"
CONFIG_HASH = "tuneroute.io/config-hash"
CONFIG_DIR = "/etc/tuneroute"  # where the trainer's and the router's ConfigMap is mounted


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the children being built."""

    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["kind"], meta["name"], meta["namespace"], meta["uid"])

    def reference(self) -> dict[str, Any]:
        # controller + blockOwnerDeletion: the garbage collector deletes children with the CR.
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class MergePatch:
    """A change to an existing child, written as a JSON merge patch of these fields only."""

    obj: dict[str, Any]


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"tuneroute-{component}",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"tuneroute.io/{owner.kind.lower()}": owner.name,
    }


def metadata(owner: Owner, name: str, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def content_hash(data: Any) -> str:
    """Stable short hash of JSON-able data (config checksums)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# 10001: the user the trainer and router images are built with.
# fsGroupChangePolicy OnRootMismatch: the kubelet re-owns a volume only when its root is not
# already ours, instead of walking every file of a multi-terabyte model or adapter claim on
# each pod start.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
