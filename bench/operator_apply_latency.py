"""Operator latency: `kubectl apply` of a FineTuneJob -> its batch/v1 Job created.

    python bench/operator_apply_latency.py [--count 100] [--dir /tmp/tuneroute-bench-cluster]
                                           [--keep] [--timeout 300] [--out docs/operator-benchmark.md]

Starts the local control plane (tests/cluster/up.sh, its own state dir), installs the CRDs
(`kubectl apply --server-side -f crds/`), runs the operator as a host process
(`python -m tuneroute_operator`, admin kubeconfig) and then applies --count FineTuneJobs
one after another, ONE `kubectl apply -f -` PROCESS PER JOB (what a user or CI does; each
apply includes kubectl's own start-up, discovery and the round trip). The apply time of a
job is when its kubectl process returned (the object is stored by then); a watch on
batch/v1 Jobs labelled tuneroute.io/finetunejob (kubernetes python client, started
before the first apply) records when each Job's ADDED event arrives. Latency per job =
watch ADDED time - apply return time. Also printed: the kubectl apply round trip, and
throughput = jobs / (first apply start -> last Job seen).

The output PVC is never bound (not needed for the Job to be created). Everything is
bounded by --timeout; the operator is stopped, the namespace deleted and (unless --keep)
the control plane taken down at the end. Writes a markdown summary to --out.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.operator_process import OperatorProcess

LABEL = "tuneroute.io/finetunejob"
NAMESPACE = "bench-apply"


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest, not the max)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def finetunejob(i: int) -> dict:
    ftj = yaml.safe_load((REPO / "examples" / "10-finetunejob-qwen3-moe.yaml").read_text())
    ftj = copy.deepcopy(ftj)
    ftj["metadata"] = {"name": f"bench-{i:04d}", "namespace": NAMESPACE}
    ftj["spec"].pop("secrets", None)
    ftj["spec"]["output"] = {"pvc": "tuneroute-adapters"}
    return ftj


class JobWatch(threading.Thread):
    """Watch batch/v1 Jobs with the label; record the first ADDED time per FineTuneJob."""

    def __init__(self, kubeconfig: Path, namespace: str):
        super().__init__(daemon=True)
        from kubernetes import client, config, watch

        self.api = client.BatchV1Api(config.new_client_from_config(str(kubeconfig)))
        self.watch = watch.Watch()
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.created_ts: dict[str, str] = {}
        self.ready = threading.Event()
        self.stop_flag = False
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            meta = self.api.list_namespaced_job(self.namespace, label_selector=LABEL).metadata
            rv = meta.resource_version if meta else None
            self.ready.set()
            while not self.stop_flag:
                for ev in self.watch.stream(
                    self.api.list_namespaced_job,
                    self.namespace,
                    label_selector=LABEL,
                    resource_version=rv,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                ):
                    t = time.time()
                    obj = ev["object"]
                    rv = obj.metadata.resource_version
                    if ev["type"] == "ADDED":
                        owner = (obj.metadata.labels or {}).get(LABEL, obj.metadata.name)
                        self.seen.setdefault(owner, t)
                        self.created_ts.setdefault(owner, obj.metadata.creation_timestamp.isoformat())
                    if self.stop_flag:
                        break
        except Exception as e:
            self.error = e
            self.ready.set()

    def stop(self) -> None:
        self.stop_flag = True
        self.watch.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--dir", default="/tmp/tuneroute-bench-cluster")
    ap.add_argument("--keep", action="store_true", help="leave the control plane running")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for all Jobs to appear")
    ap.add_argument("--out", default=str(REPO / "docs" / "operator-benchmark.md"))
    args = ap.parse_args(argv)

    t_up = time.monotonic()
    # the operator against kwok GPU nodes is what is measured; a real node would only run router pods
    # whose images are not on it (and needs root)
    os.environ.setdefault("TUNEROUTE_REAL_NODE", "0")
    cp = ControlPlane.up(args.dir, timeout=900)
    print(f"control plane up in {time.monotonic() - t_up:.1f}s ({cp.kubeconfig})", file=sys.stderr)
    op = None
    watcher = None
    tmp = Path(tempfile.mkdtemp(prefix="tuneroute-bench-op-"))
    try:
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/finetunejobs.tuneroute.io",
            "crd/modelroutes.tuneroute.io",
            "--timeout=60s",
        )
        cp.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)
        cp.kubectl("create", "namespace", NAMESPACE)

        op = OperatorProcess(cp.kubeconfig, tmp / "operator.log").start()
        watcher = JobWatch(cp.kubeconfig, NAMESPACE)
        watcher.start()
        watcher.ready.wait(30)
        if watcher.error:
            raise watcher.error

        applied: dict[str, float] = {}
        apply_rtt: list[float] = []
        t0 = time.time()
        for i in range(args.count):
            ftj = finetunejob(i)
            s = time.time()
            cp.kubectl("apply", "-f", "-", input=json.dumps(ftj), timeout=60)
            e = time.time()
            applied[ftj["metadata"]["name"]] = e
            apply_rtt.append(e - s)
        t_applied = time.time()
        print(f"applied {args.count} in {t_applied - t0:.1f}s; waiting for Jobs", file=sys.stderr)
        try:
            wait_until(
                lambda: len(watcher.seen) >= args.count or watcher.error,
                args.timeout,
                f"{args.count} Jobs",
                interval=0.2,
            )
        except TimeoutError:
            print(f"timeout: {len(watcher.seen)}/{args.count} Jobs seen", file=sys.stderr)
        if watcher.error:
            raise watcher.error
        lat = [watcher.seen[n] - applied[n] for n in applied if n in watcher.seen]
        missing = [n for n in applied if n not in watcher.seen]
        t_last = max(watcher.seen.values()) if watcher.seen else time.time()
        ms = lambda x: x * 1000
        figures = {
            "count": args.count,
            "jobs_seen": len(lat),
            "p50_ms": ms(pct(lat, 50)) if lat else None,
            "p99_ms": ms(pct(lat, 99)) if lat else None,
            "max_ms": ms(max(lat)) if lat else None,
            "min_ms": ms(min(lat)) if lat else None,
            "mean_ms": ms(statistics.fmean(lat)) if lat else None,
            "apply_p50_ms": ms(pct(apply_rtt, 50)),
            "apply_p99_ms": ms(pct(apply_rtt, 99)),
            "apply_phase_s": t_applied - t0,
            "total_s": t_last - t0,
            "throughput_per_s": len(lat) / (t_last - t0) if lat else 0.0,
        }
        print(json.dumps(figures, indent=2))
        if missing:
            print(f"missing Jobs for: {missing[:10]}{' ...' if len(missing) > 10 else ''}", file=sys.stderr)
            print(op.log_tail(40), file=sys.stderr)
        write_markdown(Path(args.out), figures, cp)
        return 0 if not missing else 1
    finally:
        if watcher:
            watcher.stop()
        if op:
            op.stop()
        cp.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        if not args.keep:
            cp.down()


def write_markdown(path: Path, f: dict, cp: ControlPlane) -> None:
    server = json.loads(cp.kubectl("version", "-o", "json").stdout).get("serverVersion", {}).get("gitVersion", "?")
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    fmt = lambda x: "n/a" if x is None else f"{x:.0f}"
    path.write_text(f"""# Operator benchmark: FineTuneJob apply -> Job created

Generated by `python bench/operator_apply_latency.py --count {f["count"]}` on
{dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}.

Machine: {os.cpu_count()} cores ({cpu}), shared with other work; everything on it: etcd,
kube-apiserver {server}, controller manager, scheduler, kwok (tests/cluster/up.sh) and the
operator (`python -m tuneroute_operator`, one process, admin kubeconfig).

Method: {f["count"]} FineTuneJobs (examples/10-finetunejob-qwen3-moe.yaml, renamed, output PVC
unbound) applied one after another, **one `kubectl apply -f -` process per job**. Latency =
time the Job's ADDED event arrives on a watch of batch/v1 Jobs labelled
`tuneroute.io/finetunejob` (kubernetes python client) minus the time that job's
`kubectl apply` returned. Throughput = Jobs / (first apply start -> last Job seen).

| figure | value |
|---|---|
| Jobs created / FineTuneJobs applied | {f["jobs_seen"]} / {f["count"]} |
| apply -> Job created, p50 | {fmt(f["p50_ms"])} ms |
| apply -> Job created, p99 | {fmt(f["p99_ms"])} ms |
| apply -> Job created, max | {fmt(f["max_ms"])} ms |
| apply -> Job created, min / mean | {fmt(f["min_ms"])} / {fmt(f["mean_ms"])} ms |
| `kubectl apply` round trip, p50 / p99 | {fmt(f["apply_p50_ms"])} / {fmt(f["apply_p99_ms"])} ms |
| time to apply all | {f["apply_phase_s"]:.1f} s |
| first apply -> last Job | {f["total_s"]:.1f} s |
| throughput | {f["throughput_per_s"]:.1f} FineTuneJobs/s (Jobs created per second, end to end) |

The applies are sequential, so throughput is bounded by kubectl's own start-up per call
(the round trip above) as much as by the operator; the operator keeps up when latency stays
flat from the first job to the last.
""")


if __name__ == "__main__":
    sys.exit(main())
