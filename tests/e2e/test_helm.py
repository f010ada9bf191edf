"""The Helm chart with the real helm binary against the local cluster; its operator runs as a
pod of the operator image on the real node."""

from __future__ import annotations

import filecmp
import json

import pytest
import yaml

from tuneroute_testing.k8s import REPO, apply, chart_image_values, created, small_finetunejob, wait_children_gone

pytestmark = pytest.mark.cluster
CHART = str(REPO / "charts" / "tuneroute")


def test_chart_lints_clean(control_plane):
    out = control_plane.helm("lint", "--strict", CHART)
    assert "0 chart(s) failed" in out.stdout


def test_chart_crds_are_the_plain_crds():
    cmp = filecmp.dircmp(REPO / "crds", REPO / "charts" / "tuneroute" / "crds")
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), (cmp.left_only, cmp.right_only, cmp.diff_files)


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--set", "replicas=2"], "/peering/enabled"),
        (["--set", "logFormat=xml"], "/logFormat"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "/watchNamespaces/0"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "metrics.port=0"], "/metrics/port"),
    ],
)
def test_values_schema_refuses_bad_values_naming_the_field(control_plane, flags, field):
    out = control_plane.helm("template", "t", CHART, "--kube-version", "1.34.4", *flags, check=False)
    assert out.returncode != 0 and field in out.stderr, out.stderr


def test_rendered_rbac_is_least_privilege(control_plane):
    docs = list(yaml.safe_load_all(control_plane.helm("template", "t", CHART, "--kube-version", "1.34.4").stdout))
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
    # update only where OwnerReferencesPermissionEnforcement needs it: the owners' finalizers
    updated = {r for rule in role["rules"] if "update" in rule["verbs"] for r in rule["resources"]}
    assert updated == {"finetunejobs/finalizers", "modelroutes/finalizers"}
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "secrets" not in resources and "*" not in resources


def test_operator_service_account_can_do_its_job_and_no_more(control_plane, release):
    sa = f"system:serviceaccount:{release.namespace}:{release.service_account}"

    def can(*args):
        return (
            control_plane.kubectl("auth", "can-i", *args, "--as", sa, "-n", "default", check=False).stdout.strip()
            == "yes"
        )

    assert (
        can("create", "jobs.batch")
        and can("patch", "deployments.apps")
        and can("patch", "finetunejobs.tuneroute.io", "--subresource=status")
    )
    assert not can("delete", "jobs.batch")
    assert not can("get", "secrets")
    assert not can("create", "pods")
    assert not can("update", "finetunejobs.tuneroute.io")
    # children carry blockOwnerDeletion; the API server here enforces owner-reference permissions
    assert can("update", "finetunejobs.tuneroute.io", "--subresource=finalizers")
    assert can("update", "modelroutes.tuneroute.io", "--subresource=finalizers")


def test_containers_with_a_read_only_root_get_a_writable_tmp(control_plane):
    """Python's tempfile (the kubernetes client writes the cluster's CA there) needs a writable
    directory; with readOnlyRootFilesystem only a volume can give it one."""
    docs = list(yaml.safe_load_all(control_plane.helm("template", "t", CHART, "--kube-version", "1.34.4").stdout))
    dep = next(d for d in docs if d and d["kind"] == "Deployment")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    for c in dep["spec"]["template"]["spec"]["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        tmp = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"), None)
        assert tmp and "emptyDir" in volumes[tmp["name"]], f"container {c['name']}: no writable /tmp"


def test_the_network_policy_admits_only_the_routes_router_pods_to_its_vllm_backends(control_plane, namespace):
    """networkPolicy.enabled: in each listed namespace a NetworkPolicy whose selectors match the
    labels the operator puts on a route's vLLM pods and router pods (the builders, called here),
    which the API server accepts. Whether traffic is then dropped is the CNI's to enforce; this
    cluster's node has none that does, so only the objects are checked."""
    from tuneroute_operator.api.modelroute import ModelRouteSpec
    from tuneroute_operator.builders import modelroute as route_build
    from tuneroute_operator.builders import vllm
    from tuneroute_operator.builders.common import Owner
    from tuneroute_operator.settings import Settings

    def render(*flags: str):
        return control_plane.helm("template", "t", CHART, "--kube-version", "1.34.4", *flags, check=False)

    assert "NetworkPolicy" not in render().stdout  # off by default
    refused = render("--set", "networkPolicy.enabled=true")
    assert refused.returncode != 0 and "set networkPolicy.namespaces (or watchNamespaces)" in refused.stderr
    out = render("--set", "networkPolicy.enabled=true", "--set", f"networkPolicy.namespaces={{{namespace},other}}")
    policies = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["namespace"] for p in policies] == [namespace, "other"]

    spec = ModelRouteSpec.model_validate(
        {
            "pool": [{"name": "m", "tier": 1, "contextWindow": 256, "backend": {"vllm": {"model": {"id": "org/m"}}}}],
            "auth": {"mode": "none"},
        }
    )
    owner = Owner("ModelRoute", "r", namespace, "uid")
    vllm_pod = vllm.deployment(owner, spec.pool[0], spec.pool[0].backend.vllm, [], Settings())["spec"]["template"]
    router_pod = route_build.deployment(owner, spec, Settings(), "h")["spec"]["template"]
    rule = policies[0]["spec"]
    assert rule["policyTypes"] == ["Ingress"] and len(rule["ingress"]) == 1
    assert rule["podSelector"]["matchLabels"].items() <= vllm_pod["metadata"]["labels"].items()
    (source,) = rule["ingress"][0]["from"]
    assert source["podSelector"]["matchLabels"].items() <= router_pod["metadata"]["labels"].items()
    assert not source["podSelector"]["matchLabels"].items() <= vllm_pod["metadata"]["labels"].items()
    dry = control_plane.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "-f", "-", input=json.dumps(policies[0]), check=False
    )
    assert dry.returncode == 0, dry.stderr


def test_the_operator_runs_as_the_charts_pod_from_its_image(control_plane, release, operator, namespace):
    """The Deployment as the chart renders it (ServiceAccount, securityContext, probes, the
    read-only root with its /tmp volume), from the image built from operator/Dockerfile."""
    cp = control_plane
    pod = operator.pod()
    container = pod["spec"]["containers"][0]
    assert container["image"] == release.images["operator"]
    assert pod["spec"]["nodeName"] == cp.node.name and pod["spec"]["serviceAccountName"] == release.service_account
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, operator.log_tail()
    # The image's user exists (kopf names itself after it) and the temp dir is writable.
    out = cp.kubectl(
        "-n",
        release.namespace,
        "exec",
        pod["metadata"]["name"],
        "--",
        *("python", "-c", "import getpass, os, tempfile; print(getpass.getuser(), os.getuid(), tempfile.gettempdir())"),
    ).stdout
    assert out.split() == ["tuneroute", "10001", "/tmp"]
    # And it does its job: a FineTuneJob gets its Job, reconciled by this pod.
    apply(cp, namespace, small_finetunejob("via-pod"))
    created(cp, "jobs", namespace, "via-pod")
    assert f"[{namespace}/via-pod] Handler 'finetunejob' succeeded" in operator.log_tail(400)


def test_install_upgrade_uninstall_leaves_nothing_behind(control_plane, images):
    cp = control_plane
    ns = "tuneroute-extra"
    cp.kubectl("create", "namespace", ns, check=False)
    cp.wait_for_default_service_account(ns)
    watched = [f"{ns}-a", f"{ns}-b"]  # the chart puts a Role in each watched namespace: they must exist
    for w in watched:
        cp.kubectl("create", "namespace", w, check=False)

    def extra(verb: str, *values: str) -> tuple[dict, dict]:
        """`helm install/upgrade` of the second release with these values: its Deployment and env."""
        sets = [arg for v in values for arg in ("--set", v)]
        flags = ["-n", ns, "--skip-crds", *chart_image_values(images), "--wait", "--timeout", "120s"]
        cp.helm(verb, "extra", CHART, *flags, *sets)
        dep = cp.get("deployment", "extra-tuneroute", "-n", ns)
        return dep, {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    # A second operator, really running: it watches only its own namespace (then the two
    # above), so it never acts on the suite's objects.
    dep, env = extra("install", f"watchNamespaces={{{ns}}}")
    assert env["TUNEROUTE_LOG_FORMAT"] == "plain" and dep["spec"]["strategy"]["type"] == "Recreate"

    dep, env = extra("upgrade", "logFormat=json", f"watchNamespaces={{{watched[0]},{watched[1]}}}")
    assert env["TUNEROUTE_LOG_FORMAT"] == "json" and env["TUNEROUTE_NAMESPACES"] == ",".join(watched)
    # watching two namespaces: the rights to act are Roles there, not cluster-wide
    assert all(cp.get("roles", "-n", w, "-l", "app.kubernetes.io/instance=extra")["items"] for w in watched)
    cluster_role = cp.get("clusterrole", "extra-tuneroute")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {"customresourcedefinitions"}
    history = json.loads(cp.helm("history", "extra", "-n", ns, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    cp.helm("uninstall", "extra", "-n", ns, "--wait")
    sel = "app.kubernetes.io/instance=extra"
    wait_children_gone(cp, ns, "deployments,services,serviceaccounts,pods", sel)
    assert not cp.get("clusterroles,clusterrolebindings,validatingadmissionpolicies", "-l", sel)["items"]
    assert not any(cp.get("roles,rolebindings", "-n", w, "-l", sel)["items"] for w in watched)
    for n in (ns, *watched):
        cp.kubectl("delete", "namespace", n, "--wait=false")
