"""Small helpers for the end-to-end tests: read resources, wait on their state."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from . import REPO
from .control_plane import ControlPlane, wait_until


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


def apply(cp: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(obj))


def get(cp: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cp.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_phase(cp: ControlPlane, namespace: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def reached():
        ftj = get(cp, namespace, "finetunejob", name)
        return ftj if ftj and (ftj.get("status") or {}).get("phase") == phase else None

    try:
        return wait_until(reached, timeout, f"FineTuneJob {name} to be {phase}")
    except TimeoutError:
        ftj = get(cp, namespace, "finetunejob", name) or {}
        raise TimeoutError(
            f"FineTuneJob {name} never reached {phase}; status: {json.dumps(ftj.get('status'))}"
        ) from None


def running_pod(cp: ControlPlane, namespace: str, job: str, exclude: tuple[str, ...] = ()) -> str:
    def find():
        pods = cp.get("pods", "-n", namespace, "-l", f"job-name={job}")["items"]
        names = [
            p["metadata"]["name"]
            for p in pods
            if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in exclude
        ]
        return names[0] if names else None

    return wait_until(find, 60, f"a Running pod of Job {job}")


def wait_children_gone(cp: ControlPlane, namespace: str, kinds: str, selector: str) -> None:
    """Wait for the garbage collector to delete the children labelled `selector`."""
    wait_until(
        lambda: not cp.get(kinds, "-n", namespace, "-l", selector)["items"], 60, f"garbage collection of {selector}"
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return cp.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
