"""The few Kubernetes API calls the reconcilers make, over kubernetes' DynamicClient.

Children are written with server-side apply: applying the same manifest twice is a
no-op, so a reconcile interrupted anywhere and run again converges to one set of children.
Responses stay plain JSON dicts: the DynamicClient's ResourceInstance wrapping (and unwrapping
with to_dict) cost more CPU than anything else the operator did at scale.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

FIELD_MANAGER = "tuneroute-operator"
# Concurrent requests: one connection per worker thread (urllib3 blocks a thread on a full pool).
CONNECTIONS = 32


def _plain(_client: Any, data: Any) -> Any:
    return data


class Kube:
    def __init__(self, api_client: ApiClient):
        self.dyn = DynamicClient(api_client)

    @classmethod
    def from_environment(cls, connections: int = CONNECTIONS) -> Kube:
        """In-cluster credentials when in a pod, else the kubeconfig (KUBECONFIG)."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
        cfg.connection_pool_maxsize = connections
        return cls(ApiClient(cfg))

    def _res(self, api_version: str, kind: str):
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        res = self._res(obj["apiVersion"], obj["kind"])
        return res.server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            serializer=_plain,
        )

    def merge_patch(self, obj: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the fields `obj` holds (for objects whose other fields are immutable)."""
        meta = obj["metadata"]
        res = self._res(obj["apiVersion"], obj["kind"])
        return res.patch(
            body={k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")},
            name=meta["name"],
            namespace=meta.get("namespace"),
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
            serializer=_plain,
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._res(api_version, kind).get(name=name, namespace=namespace, serializer=_plain)
        except NotFoundError:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        out = self._res(api_version, kind).get(namespace=namespace, label_selector=label_selector, serializer=_plain)
        return out.get("items") or []

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """JSON merge patch of /status: keys not given (e.g. the trainer's progress) are kept."""
        res = self._res(api_version, kind).subresources["status"]
        res.patch(
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            serializer=_plain,
        )
