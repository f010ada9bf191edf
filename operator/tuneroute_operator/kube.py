"""The few Kubernetes API calls the reconcilers make, over kubernetes' DynamicClient.

Children are written with server-side apply: applying the same manifest twice is a
no-op, so a reconcile interrupted anywhere and run again converges to one set of children.
"""

from __future__ import annotations

from typing import Any

from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

FIELD_MANAGER = "tuneroute-operator"


class Kube:
    def __init__(self, api_client: ApiClient):
        self.dyn = DynamicClient(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials when in a pod, else the kubeconfig (KUBECONFIG)."""
        try:
            config.load_incluster_config()
            return cls(ApiClient())
        except config.ConfigException:
            return cls(config.new_client_from_config())

    def _res(self, api_version: str, kind: str):
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        res = self._res(obj["apiVersion"], obj["kind"])
        out = res.server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return out.to_dict()

    def merge_patch(self, obj: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the fields `obj` holds (for objects whose other fields are immutable)."""
        meta = obj["metadata"]
        res = self._res(obj["apiVersion"], obj["kind"])
        out = res.patch(
            body={k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")},
            name=meta["name"],
            namespace=meta.get("namespace"),
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
        )
        return out.to_dict()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._res(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        out = self._res(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        return out.to_dict().get("items") or []

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """JSON merge patch of /status: keys not given (e.g. the trainer's progress) are kept."""
        res = self._res(api_version, kind).subresources["status"]
        res.patch(body={"status": status}, name=name, namespace=namespace, content_type="application/merge-patch+json")
