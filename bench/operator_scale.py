"""Operator at scale: 1,000 FineTuneJobs in ONE server-side apply onto 200 fake GPU nodes.

    python bench/operator_scale.py [--jobs 1000] [--nodes 200] [--dir /tmp/tuneroute-bench-scale]
                                   [--baseline REF|CHECKOUT|none] [--keep] [--timeout 900] [--out FILE]

Starts the local control plane (tests/cluster/up.sh, its own state dir) with --nodes kwok GPU
nodes (8 nvidia.com/gpu each) and the CRDs. Then, once for the baseline operator and once for
this checkout's, in that order and in a fresh namespace each (deleted after its run, so both
find the same free nodes): one ReadWriteMany claim bound to a hostPath volume for every job's
output, the operator as a host process (`python -m tuneroute_operator`, admin kubeconfig), and
one `kubectl apply --server-side -f` of --jobs FineTuneJobs (examples/10-finetunejob, one GPU
each, renamed). Watches (kubernetes python client, started before the apply) record when each Job
appears, when each training pod is first Running, and when each FineTuneJob first says Running.

--baseline: a git ref of this repository (its operator/, trainer-image/ and router-image/ are
extracted with `git archive`), a checkout's directory, or `none`. The default is the operator
before events were coalesced and statuses computed from the watches (commit 9fb5cda).

Figures (targets from issue 11):
- all Jobs exist, seconds after the apply returned (target <= 60 s);
- status lag: FineTuneJob Running minus its pod Running, p50 / p99 / max (target max <= 10 s);
- the operator's CPU seconds from the apply to the end, and its RSS at the end and its peak
  (target < 300 MiB at 1,000 jobs).
The cluster's own pace (pods Running after the apply) is printed beside them: the Job controller
and the scheduler run at their default API rates, which bound how fast pods exist at all.

Progress goes to stderr with elapsed time; figures of both runs and their ratios (baseline /
this checkout: above 1 is better here) to stdout as JSON and to --out (markdown).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.k8s import small_finetunejob
from tuneroute_testing.operator_process import OperatorProcess

BASELINE = "9fb5cda"
CLAIM = "tuneroute-adapters"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


# --- the cluster ---------------------------------------------------------------------------------


def gpu_nodes(first: int, last: int) -> dict:
    """kwok nodes gpu-node-<first>..<last-1>, as tests/cluster/up.sh makes its two."""
    items = []
    for i in range(first, last):
        name = f"gpu-node-{i}"
        capacity = {"cpu": "64", "memory": "512Gi", "ephemeral-storage": "2Ti", "pods": "110", "nvidia.com/gpu": "8"}
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        "nvidia.com/gpu.present": "true",
                    },
                },
                "status": {
                    "addresses": [{"type": "InternalIP", "address": f"10.241.{i // 250}.{i % 250 + 1}"}],
                    "capacity": capacity,
                    "allocatable": capacity,
                },
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def shared_claim(cp: ControlPlane, namespace: str) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
    }
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{namespace}"},
        "spec": {
            "capacity": {"storage": "1Ti"},
            "accessModes": ["ReadWriteMany"],
            "hostPath": {"path": f"/tmp/pv-{namespace}"},
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pvc, pv]}))


def finetunejobs(n: int, namespace: str) -> str:
    docs = []
    for i in range(n):
        # one GPU, and a CPU and memory share that lets 8 fit on a node (the example asks 200Gi)
        ftj = small_finetunejob(f"scale-{i:04d}", resources={"gpus": 1, "cpu": "4", "memory": "32Gi"})
        ftj["metadata"]["namespace"] = namespace
        docs.append(ftj)
    return yaml.safe_dump_all(docs)


# --- what we watch ---------------------------------------------------------------------------------


class Watch(threading.Thread):
    """One watch over a kind in the namespace; `first[key]` = when `pick(obj)` first gave that key."""

    def __init__(self, list_fn, pick):
        super().__init__(daemon=True)
        self.list_fn = list_fn  # a lambda: kubernetes' Watch then yields plain dicts
        self.pick = pick
        self.first: dict[str, float] = {}
        self.stopped = False
        self.error: Exception | None = None

    def run(self) -> None:
        from kubernetes import watch

        rv = None
        try:
            while not self.stopped:
                kw: dict[str, str] = {"resource_version": rv} if rv else {}
                for ev in watch.Watch().stream(self.list_fn, timeout_seconds=60, **kw):
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    key = self.pick(obj)
                    if key:
                        self.first.setdefault(key, time.monotonic())
                    if self.stopped:
                        break
        except Exception as e:  # reported by the main thread
            self.error = e


def watches(kubeconfig: Path, namespace: str) -> tuple[Watch, Watch, Watch]:
    from kubernetes import client, config

    api = config.new_client_from_config(str(kubeconfig))
    batch, core, custom = client.BatchV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)
    return (
        Watch(lambda **kw: batch.list_namespaced_job(namespace, **kw), job_created),
        Watch(lambda **kw: core.list_namespaced_pod(namespace, **kw), pod_running),
        Watch(
            lambda **kw: custom.list_namespaced_custom_object(
                "tuneroute.io", "v1alpha1", namespace, "finetunejobs", **kw
            ),
            finetunejob_running,
        ),
    )


def job_created(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("name")


def pod_running(obj: dict) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    phase = (obj.get("status") or {}).get("phase")
    return labels.get("job-name") if phase == "Running" else None


def finetunejob_running(obj: dict) -> str | None:
    return obj["metadata"]["name"] if (obj.get("status") or {}).get("phase") == "Running" else None


# --- the operator's own costs ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) in MiB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    kib = lambda k: int(status[k].split()[0]) / 1024
    return kib("VmRSS"), kib("VmHWM")


# --- one run ---------------------------------------------------------------------------------------


def operator_source(baseline: str, tmp: Path) -> Path:
    """A directory holding operator/, trainer-image/, router-image/ of the baseline."""
    if Path(baseline).is_dir():
        return Path(baseline).resolve()
    out = tmp / "baseline-src"
    out.mkdir()
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", baseline, "operator", "trainer-image", "router-image"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    return out


def run_once(cp: ControlPlane, args: argparse.Namespace, label: str, src: Path | None, tmp: Path) -> dict:
    """Apply --jobs FineTuneJobs in a fresh namespace with the operator of `src` (None: this
    checkout's); wait for all Jobs, pods and FineTuneJobs; delete the namespace. Its figures."""
    namespace = f"bench-scale-{label}"
    cp.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=600s", check=False, timeout=660)
    cp.kubectl("create", "namespace", namespace)
    cp.wait_for_default_service_account(namespace)
    shared_claim(cp, namespace)

    env = {"TUNEROUTE_NAMESPACES": namespace}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(src / p) for p in ("operator", "trainer-image", "router-image"))
    op = OperatorProcess(cp.kubeconfig, tmp / f"operator-{label}.log", env).start()
    say(f"[{label}] operator up (pid {op.proc.pid}, {src or 'this checkout'})")
    all_watches = jobs, pods, ftjs = watches(cp.kubeconfig, namespace)
    try:
        for w in all_watches:
            w.start()
        time.sleep(2)  # the watches are open (nothing exists yet, so none can be missed anyway)

        manifest = tmp / f"finetunejobs-{label}.yaml"
        manifest.write_text(finetunejobs(args.jobs, namespace))
        cpu0, (rss0, _) = cpu_seconds(op.proc.pid), memory_mib(op.proc.pid)
        load0 = os.getloadavg()[0]
        say(f"[{label}] applying {args.jobs} FineTuneJobs in one server-side apply (operator RSS {rss0:.0f} MiB)")
        t_start = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", str(manifest), timeout=900)
        t_applied = time.monotonic()
        say(f"[{label}] apply returned after {t_applied - t_start:.1f}s")

        deadline = t_applied + args.timeout
        last = None
        while time.monotonic() < deadline:
            for w in all_watches:
                if w.error:
                    raise w.error
            done = (len(jobs.first), len(pods.first), len(ftjs.first))
            if done != last:
                say(f"[{label}] Jobs {done[0]}/{args.jobs}, pods Running {done[1]}, FineTuneJobs Running {done[2]}")
                last = done
            if min(done) >= args.jobs:
                break
            time.sleep(5)
        cpu1, (rss1, peak) = cpu_seconds(op.proc.pid), memory_mib(op.proc.pid)
        if min(len(jobs.first), len(pods.first), len(ftjs.first)) < args.jobs:
            say(f"[{label}] did not settle before --timeout; operator log tail:\n" + op.log_tail(30))
    finally:
        for w in all_watches:
            w.stopped = True
        op.stop()

    lags = [ftjs.first[k] - pods.first[k] for k in ftjs.first if k in pods.first]

    def after(xs: dict[str, float], t: float = t_applied) -> float | None:
        return round(max(xs.values()) - t, 1) if xs else None

    figures = {
        "operator": str(src) if src else "this checkout",
        "apply_seconds": round(t_applied - t_start, 1),
        "jobs_created": len(jobs.first),
        "all_jobs_after_apply_s": after(jobs.first),
        # The operator starts on the first objects while the apply still runs: from its start too.
        "all_jobs_after_apply_start_s": after(jobs.first, t_start),
        "pods_running": len(pods.first),
        "all_pods_running_after_apply_s": after(pods.first),
        "finetunejobs_running": len(ftjs.first),
        "all_finetunejobs_running_after_apply_s": after(ftjs.first),
        "all_finetunejobs_running_after_apply_start_s": after(ftjs.first, t_start),
        "status_lag_p50_s": round(pct(lags, 50), 2) if lags else None,
        "status_lag_p99_s": round(pct(lags, 99), 2) if lags else None,
        "status_lag_max_s": round(max(lags), 2) if lags else None,
        "operator_cpu_seconds": round(cpu1 - cpu0, 1),
        "operator_rss_before_mib": round(rss0),
        "operator_rss_after_mib": round(rss1),
        "operator_rss_peak_mib": round(peak),
        "load_average_at_start": round(load0, 1),
    }
    say(f"[{label}] deleting its namespace")
    cp.kubectl("delete", "namespace", namespace, "--timeout=600s", check=False, timeout=660)
    return figures


# --- the run -------------------------------------------------------------------------------------

# Figures where smaller is better: their ratio baseline / this checkout.
COMPARED = (
    "all_jobs_after_apply_start_s",
    "all_finetunejobs_running_after_apply_start_s",
    "status_lag_p50_s",
    "status_lag_p99_s",
    "status_lag_max_s",
    "operator_cpu_seconds",
    "operator_rss_peak_mib",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--dir", default="/tmp/tuneroute-bench-scale")
    ap.add_argument("--baseline", default=BASELINE, help="git ref or checkout of the operator to compare with, or none")
    ap.add_argument("--keep", action="store_true", help="leave the control plane running")
    ap.add_argument("--timeout", type=float, default=900, help="seconds for each run to settle after its apply")
    ap.add_argument("--out", default=str(REPO / "docs" / "operator-scale-benchmark.md"))
    args = ap.parse_args(argv)

    # the operator against kwok GPU nodes is what is measured; a real node would only run router pods
    # whose images are not on it (and needs root)
    os.environ.setdefault("TUNEROUTE_REAL_NODE", "0")
    cp = ControlPlane.up(args.dir, timeout=900)
    say(f"control plane up ({cp.kubeconfig})")
    tmp = Path(tempfile.mkdtemp(prefix="tuneroute-scale-"))
    try:
        cp.kubectl("apply", "-f", "-", input=json.dumps(gpu_nodes(2, args.nodes)), timeout=300)
        wait_until(
            lambda: (
                sum(
                    c["type"] == "Ready" and c["status"] == "True"
                    for n in cp.get("nodes")["items"]
                    for c in n["status"].get("conditions", [])
                )
                >= args.nodes
            ),
            300,
            f"{args.nodes} Ready nodes",
            interval=2,
        )
        say(f"{args.nodes} GPU nodes Ready ({8 * args.nodes} GPUs)")
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.tuneroute.io", "--timeout=60s")

        runs = {}
        if args.baseline != "none":
            runs["baseline"] = run_once(cp, args, "baseline", operator_source(args.baseline, tmp), tmp)
            runs["baseline"]["operator"] = args.baseline
        runs["this"] = run_once(cp, args, "this", None, tmp)
        ratios = {}
        if "baseline" in runs:
            b, t = runs["baseline"], runs["this"]
            ratios = {k: round(b[k] / t[k], 2) if b[k] and t[k] else None for k in COMPARED}
        result = {"jobs": args.jobs, "nodes": args.nodes, "runs": runs, "ratio_baseline_over_this": ratios}
        print(json.dumps(result, indent=2))
        write_markdown(Path(args.out), result)
        settled = all(
            min(f["jobs_created"], f["pods_running"], f["finetunejobs_running"]) >= args.jobs for f in runs.values()
        )
        return 0 if settled else 1
    finally:
        if not args.keep:
            cp.down()


def write_markdown(path: Path, r: dict) -> None:
    runs, ratios = r["runs"], r["ratio_baseline_over_this"]
    names = list(runs)

    def row(title: str, key: str, unit: str = "s", target: str = "") -> str:
        cells = ["n/a" if runs[n][key] is None else f"{runs[n][key]} {unit}" for n in names]
        ratio = [str(ratios.get(key) or "")] if ratios else []
        return "| " + " | ".join([title, *cells, *ratio, target]) + " |"

    header = "| figure | " + " | ".join(runs[n]["operator"] for n in names) + (" | ratio |" if ratios else " |")
    header += " target |\n|" + "---|" * (len(names) + (3 if ratios else 2))
    rss = "| operator RSS before / after / peak | " + " | ".join(
        f"{runs[n]['operator_rss_before_mib']} / {runs[n]['operator_rss_after_mib']} / {runs[n]['operator_rss_peak_mib']} MiB"
        for n in names
    )
    rss += (f" | {ratios.get('operator_rss_peak_mib') or ''} (peak)" if ratios else "") + " | < 300 MiB |"
    counts = "| created / pods Running / FineTuneJobs Running | " + " | ".join(
        f"{runs[n]['jobs_created']} / {runs[n]['pods_running']} / {runs[n]['finetunejobs_running']}" for n in names
    )
    counts += (" | " if ratios else "") + f" | {r['jobs']} each |"
    j = r["jobs"]
    path.write_text(f"""# Operator at scale: {j} FineTuneJobs, one server-side apply, {r["nodes"]} GPU nodes

Generated by `python bench/operator_scale.py --jobs {j} --nodes {r["nodes"]}` on
{dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}: the baseline operator first, then this
checkout's, one after the other on the same control plane (each in a fresh namespace, deleted
after its run). Ratio: baseline / this checkout (above 1: this checkout is faster or smaller).

Machine: {os.cpu_count()} cores, shared with other work (load average at each apply:
{", ".join(str(runs[n]["load_average_at_start"]) for n in names)}); everything on it: etcd,
kube-apiserver, controller manager, scheduler, kwok ({r["nodes"]} nodes, 8 nvidia.com/gpu each) and
the operator (one process, admin kubeconfig). The Job controller and the scheduler run at their
default API rates, which bound how fast pods exist at all (the "pods Running" row). The operator
starts on the first FineTuneJobs while the apply is still running, and the apply's own duration
varies with the machine's load (and with the API server's other work, the operator's included):
compare the rows counted from the apply's start; those counted from its return are the issue's
targets.

{header}
{counts}
{row("`kubectl apply --server-side` of the FineTuneJobs", "apply_seconds")}
{row("all Jobs exist, after the apply started", "all_jobs_after_apply_start_s")}
{row("all Jobs exist, after the apply returned", "all_jobs_after_apply_s", target="<= 60 s")}
{row("all pods Running (the cluster's pace)", "all_pods_running_after_apply_s")}
{row("all FineTuneJobs Running, after the apply started", "all_finetunejobs_running_after_apply_start_s")}
{row("all FineTuneJobs Running, after the apply returned", "all_finetunejobs_running_after_apply_s")}
{row("status lag p50 (FineTuneJob Running after its pod)", "status_lag_p50_s")}
{row("status lag p99", "status_lag_p99_s")}
{row("status lag max", "status_lag_max_s", target="<= 10 s")}
{row("operator CPU, apply to settled", "operator_cpu_seconds", "CPU-s")}
{rss}
""")


if __name__ == "__main__":
    sys.exit(main())
