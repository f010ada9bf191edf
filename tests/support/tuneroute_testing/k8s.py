"""Helpers for the tests that talk to the API server: read resources, and wait on their state
by watching it (a list, then a watch from its resourceVersion), never by polling."""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from . import REPO
from .control_plane import ControlPlane
from .process import wait_until

T = TypeVar("T")
Objects = dict[str, dict[str, Any]]  # name -> object, as the watch last saw it


def example(name: str) -> dict[str, Any]:
    """One manifest from examples/, by file name stem prefix (e.g. '10-finetunejob')."""
    path = next((REPO / "examples").glob(f"{name}*.yaml"))
    return copy.deepcopy(yaml.safe_load(path.read_text()))


def small_finetunejob(name: str, **spec: Any) -> dict[str, Any]:
    ftj = example("10-finetunejob")
    ftj["metadata"] = {"name": name}
    ftj["spec"].pop("secrets", None)
    ftj["spec"]["output"] = {"pvc": "tuneroute-adapters"}
    ftj["spec"].update(spec)
    return ftj


def apply(cp: ControlPlane, namespace: str | None, obj: dict[str, Any]) -> None:
    """`kubectl apply` of one object (namespace None: a cluster-scoped one)."""
    cp.kubectl(*(("-n", namespace) if namespace else ()), "apply", "-f", "-", input=json.dumps(obj))


def hostpath_volume(name: str, path: str, namespace: str, claim: str) -> dict[str, Any]:
    """A PersistentVolume on the node's disk, bound in advance to one claim (no provisioner here)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "hostPath": {"path": path},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def small_route(name: str = "assistant", **spec: Any) -> dict[str, Any]:
    """examples/20-modelroute with a small CPU request per router pod: the real node where the
    router pods run has 2 cores, and a test's namespace may still be terminating the last
    test's routers. Open (auth mode none): its router pods need no keys Secret to start."""
    route = example("20-modelroute")
    route["metadata"] = {"name": name}
    route["spec"]["router"] = {**route["spec"].get("router", {}), "resources": {"cpu": "50m", "memory": "512Mi"}}
    route["spec"]["auth"] = {"mode": "none"}
    route["spec"].update(spec)
    return route


def get(cp: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cp.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


@functools.cache
def _dynamic(kubeconfig: Path) -> Any:
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(config.new_client_from_config(str(kubeconfig)))


def _resource(cp: ControlPlane, resource: str) -> Any:
    """The API resource kubectl would take `resource` ("plural[.group]") for: the core group's
    when the name alone is ambiguous (events)."""
    plural, _, group = resource.partition(".")
    found = [r for r in _dynamic(cp.kubeconfig).resources.search(name=plural) if not r.kind.endswith("List")]
    found = [r for r in found if r.group == group] if group else sorted(found, key=lambda r: r.group != "")
    if not found:
        raise LookupError(f"no API resource {resource}")
    return found[0]


def watch(
    cp: ControlPlane,
    resource: str,
    namespace: str | None,
    until: Callable[[Objects], T | None],
    *,
    name: str | None = None,
    selector: str | None = None,
    fields: str | None = None,
    timeout: float = 60,
    what: str = "",
) -> T:
    """Watch `resource` ("plural[.group]" as kubectl spells it: "pods", "jobs.batch",
    "finetunejobs.tuneroute.io") until `until(objects)` returns something truthy, and return it.
    `objects` holds every matching object (one `name`, or those `selector`/`fields` select)."""
    res = _resource(cp, resource)
    fields = ",".join(f for f in (fields, f"metadata.name={name}" if name else None) if f) or None
    query = {"namespace": namespace, "label_selector": selector, "field_selector": fields}
    deadline = time.monotonic() + timeout
    objects: Objects = {}
    while True:  # a list, then a watch from its resourceVersion; again if the watch ends or expires
        listing = res.get(**query).to_dict()
        objects = {o["metadata"]["name"]: o for o in listing.get("items") or []}
        if result := until(objects):
            return result
        version = listing["metadata"]["resourceVersion"]
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for event in res.watch(**query, resource_version=version, timeout=max(1, int(left))):
            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                break
            obj = event["raw_object"]
            if event["type"] == "DELETED":
                objects.pop(obj["metadata"]["name"], None)
            else:
                objects[obj["metadata"]["name"]] = obj
            if result := until(objects):
                return result
        if time.monotonic() >= deadline:
            break
    seen = json.dumps(
        {n: o.get("status") or {k: o.get(k) for k in ("type", "reason", "message")} for n, o in objects.items()}
    )[:3000]
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or resource}; last seen status: {seen}")


def watch_one(
    cp: ControlPlane,
    resource: str,
    namespace: str,
    name: str,
    until: Callable[[dict[str, Any]], Any],
    timeout: float = 60,
    what: str = "",
) -> dict[str, Any]:
    """Watch one object until `until(obj)` holds (or, without `until`, until it exists); return it."""
    return watch(
        cp,
        resource,
        namespace,
        lambda objs: objs[name] if name in objs and until(objs[name]) else None,
        name=name,
        timeout=timeout,
        what=what or f"{resource} {name}",
    )


def created(cp: ControlPlane, resource: str, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    return watch_one(cp, resource, namespace, name, lambda _: True, timeout, f"{resource} {name} to exist")


def wait_phase(cp: ControlPlane, namespace: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return watch_one(
        cp,
        "finetunejobs.tuneroute.io",
        namespace,
        name,
        lambda ftj: (ftj.get("status") or {}).get("phase") == phase,
        timeout,
        f"FineTuneJob {name} to be {phase}",
    )


def running_pod(cp: ControlPlane, namespace: str, job: str, exclude: tuple[str, ...] = (), timeout: float = 60) -> str:
    """The name of a Running pod of the Job (not one of `exclude`)."""

    def running(pods: Objects) -> str | None:
        names = [n for n, p in pods.items() if (p.get("status") or {}).get("phase") == "Running" and n not in exclude]
        return sorted(names)[0] if names else None

    what = f"a Running pod of Job {job}"
    return watch(cp, "pods", namespace, running, selector=f"job-name={job}", timeout=timeout, what=what)


def wait_children_gone(cp: ControlPlane, namespace: str, resources: str, selector: str) -> None:
    """Wait for the garbage collector to delete the children labelled `selector` (resources as
    kubectl names them, comma-separated)."""
    for resource in resources.split(","):
        watch(cp, resource, namespace, lambda objs: not objs, selector=selector, what=f"{resource} {selector} to go")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return cp.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]


def wait_events(
    cp: ControlPlane, namespace: str, name: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Watch the Events about object `name` until `until(events)` holds; return them."""
    return watch(
        cp,
        "events",
        namespace,
        lambda objs: list(objs.values()) if until(list(objs.values())) else None,
        fields=f"involvedObject.name={name}",
        timeout=timeout,
        what=f"the Events of {name}",
    )


def wait_deployment_ready(cp: ControlPlane, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until every replica of a Deployment is ready (its pods really run on the real node)."""

    def ready():
        dep = get(cp, namespace, "deployment", name)
        want = (dep or {}).get("spec", {}).get("replicas")
        st = (dep or {}).get("status") or {}
        return dep if dep and st.get("readyReplicas") == want and st.get("updatedReplicas") == want else None

    try:
        return wait_until(ready, timeout, f"Deployment {name} ready")
    except TimeoutError:
        pods = cp.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
        raise TimeoutError(f"Deployment {name} not ready after {timeout:.0f}s:\n{pods}") from None


def chart_image_values(images: dict[str, str]) -> list[str]:
    """helm --set flags: the chart's image values pointing at the locally built images."""
    repo, tag = images["operator"].rsplit(":", 1)
    return [
        *("--set", f"image.repository={repo}", "--set", f"image.tag={tag}"),
        *("--set", f"trainer.image={images['trainer']}", "--set", f"router.image={images['router']}"),
    ]


def table(cp: ControlPlane, *args: str) -> list[dict[str, str]]:
    """`kubectl get ARGS` as printed, one dict per row keyed by the column headers; cells are cut
    at the headers' positions, so an empty cell (a MODEL column for a model on a PVC) stays empty."""
    header, *rows = cp.kubectl("get", *args).stdout.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for row in rows]
