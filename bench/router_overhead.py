"""Router overhead: direct call vs tuneroute router vs LiteLLM proxy, same fast local backend.

    python bench/router_overhead.py [--seconds 5 --concurrency 16 --litellm-python PY]

Starts (all on 127.0.0.1): a canned-response OpenAI-compatible backend (raw asyncio, so the
backend is not the bottleneck), the router (`python -m tuneroute_router`, routing model
"auto", so every request is classified), and LiteLLM's proxy pointed at the same backend.
The proxy under test is pinned to CPU 1, backend and load generator to CPU 0 (taskset,
when available), so "throughput" is one proxy process on one core.

Latency: sequential requests (concurrency 1), p50/p99; "added" = minus the direct figures;
the router also reports its own overhead per request (x-tuneroute-overhead-ms).
Throughput: requests/s at --concurrency for --seconds. Targets are interleaved over
--rounds and the median round is printed (the machine is shared). Bounded: about a minute.
LiteLLM's proxy needs litellm's proxy extras, which the dev venv lacks (litellm-proxy is not
installable here); point --litellm-python at a venv that has them, or it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuneroute_testing.process import free_port, http_ok, wait_until

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-bench-" + "7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a"  # both proxies check it
REQUEST_BODY = json.dumps(
    {"model": "MODEL", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16}
).encode()
CANNED = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "small",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
).encode()


# ---- a backend that costs almost nothing ---------------------------------------------


class _Backend(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < head_end + 4 + n:
                return
            self.buf = self.buf[head_end + 4 + n :]
            self.t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(CANNED)).encode()
                + b"\r\n\r\n"
                + CANNED
            )


def serve_backend(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(_Backend, "127.0.0.1", port, backlog=1024))
    loop.run_until_complete(srv.serve_forever())


# ---- a load generator that costs little: raw HTTP/1.1 keep-alive ---------------------


async def _conn(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


_SELF = b"x-tuneroute-overhead-ms: "
self_reported: list[float] = []  # the router's own x-tuneroute-overhead-ms, when present


async def _one(reader, writer, req: bytes, record: bool = False) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    if record and (j := low.find(_SELF)) >= 0:
        self_reported.append(float(low[j + len(_SELF) : low.find(b"\r\n", j)]))
    i = low.find(b"content-length:")
    if i >= 0:
        n = int(low[i + 15 : low.find(b"\r\n", i)])
        await reader.readexactly(n)
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def _request(port: int, model: str, path: str = "/v1/chat/completions") -> bytes:
    body = REQUEST_BODY.replace(b"MODEL", model.encode())
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def latency(port: int, model: str, n: int, path: str) -> list[float]:
    req = _request(port, model, path)
    r, w = await _conn(port)
    for _ in range(max(20, n // 10)):  # warm-up
        assert await _one(r, w, req) == 200
    out = []
    for _ in range(n):
        t = time.perf_counter()
        s = await _one(r, w, req, record=True)
        out.append(time.perf_counter() - t)
        assert s == 200, s
    w.close()
    return out


async def throughput(port: int, model: str, conc: int, seconds: float, path: str) -> tuple[float, int]:
    req = _request(port, model, path)
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal done, errors
        r, w = await _conn(port)
        while time.perf_counter() < stop:
            if await _one(r, w, req) == 200:
                done += 1
            else:
                errors += 1
        w.close()

    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conc)])
    return done / (time.perf_counter() - t), errors


# ---- orchestration ---------------------------------------------------------------------


def pinned(cpu: str, args: list[str]) -> list[str]:
    return (["taskset", "-c", cpu] + args) if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else args


def _alive(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"process exited with {proc.returncode}")
    return True


def _accepts(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), 0.2).close()
    return True


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_until(
        lambda: _alive(proc) and _accepts(port),
        timeout,
        f"port {port}",
        ignore=(OSError,),
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_until(lambda: _alive(proc) and http_ok(url), timeout, url, ignore=(OSError,))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="throughput run per target and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=500, help="sequential requests per target and round")
    ap.add_argument("--litellm-python", default=os.environ.get("LITELLM_PYTHON", sys.executable))
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tuneroute-bench-"))
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    try:
        bport = free_port()
        procs.append(subprocess.Popen(pinned("0", [sys.executable, __file__, "--serve-backend", str(bport)])))
        wait_port(bport, procs[-1])
        burl = f"http://127.0.0.1:{bport}/v1"

        rport = free_port()
        (tmp / "keys").write_text(KEY + "\n")
        (tmp / "router.yaml").write_text(
            json.dumps(
                {
                    "auth": {"apiKeysPath": str(tmp / "keys")},
                    "pool": [
                        {"name": "small", "url": burl, "tier": 1, "contextWindow": 8192, "maxConcurrency": 1024},
                        {"name": "large", "url": burl, "tier": 2, "contextWindow": 8192, "maxConcurrency": 1024},
                    ],
                }
            )
        )
        procs.append(
            subprocess.Popen(
                pinned(
                    "1",
                    [
                        sys.executable,
                        "-m",
                        "tuneroute_router",
                        "--config",
                        str(tmp / "router.yaml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(rport),
                        "--log-level",
                        "warning",
                    ],
                ),
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_ready(f"http://127.0.0.1:{rport}/readyz", procs[-1])

        targets = {
            "direct": (bport, "small"),
            "tuneroute (auto)": (rport, "auto"),
            "tuneroute (by name)": (rport, "small"),
        }

        lport = free_port()
        (tmp / "litellm.yaml").write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": "small",
                            "litellm_params": {"model": "openai/small", "api_base": burl, "api_key": "x"},
                        }
                    ],
                    "litellm_settings": {"telemetry": False, "drop_params": True},
                    "general_settings": {"master_key": KEY},
                }
            )
        )
        lenv = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",
        }
        lp = subprocess.Popen(
            pinned(
                "1",
                [
                    a.litellm_python,
                    "-m",
                    "litellm.proxy.proxy_cli",
                    "--config",
                    str(tmp / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(lport),
                    "--num_workers",
                    "1",
                ],
            ),
            env=lenv,
            stdout=open(tmp / "litellm.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(lp)
        try:
            wait_ready(f"http://127.0.0.1:{lport}/health/liveliness", lp, timeout=180)
            targets["litellm proxy"] = (lport, "small")
        except RuntimeError as e:
            print(f"LiteLLM proxy skipped ({e}); see {tmp / 'litellm.log'}", file=sys.stderr)

        # Targets interleaved over rounds and the median round reported: the machine is shared,
        # and a neighbour's burst should not land on one target only.
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        rounds: dict[str, list[dict]] = {n: [] for n in targets}
        selfrep: dict[str, list[float]] = {n: [] for n in targets}
        for _ in range(a.rounds):
            for name, (port, model) in targets.items():
                self_reported.clear()
                lat = asyncio.run(latency(port, model, a.requests, "/v1/chat/completions"))
                selfrep[name] += self_reported
                rps, errs = asyncio.run(throughput(port, model, a.concurrency, a.seconds, "/v1/chat/completions"))
                rounds[name].append(
                    {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3, "rps": rps, "errors": errs}
                )
        med = lambda xs: statistics.median(xs)
        results = {
            n: {k: (sum if k == "errors" else med)([r[k] for r in rs]) for k in rs[0]} for n, rs in rounds.items()
        }
        for n, xs in selfrep.items():
            if xs:
                results[n]["self_p50_ms"], results[n]["self_p99_ms"] = pct(xs, 0.5), pct(xs, 0.99)
        base = results["direct"]
        print(
            f"# router overhead ({os.cpu_count()} cores, load average {load:.2f} at start; proxy pinned to CPU 1; "
            f"median of {a.rounds} interleaved rounds, each {a.requests} sequential requests and "
            f"{a.seconds:.0f}s at concurrency {a.concurrency})\n"
        )
        print(
            "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | self-reported overhead p50 / p99 ms "
            f"| req/s @c{a.concurrency} | errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            added = (
                "- | -"
                if name == "direct"
                else f"{r['p50_ms'] - base['p50_ms']:.3f} | {r['p99_ms'] - base['p99_ms']:.3f}"
            )
            selfcol = f"{r['self_p50_ms']:.3f} / {r['self_p99_ms']:.3f}" if "self_p50_ms" in r else "-"
            print(
                f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {added} | {selfcol} | {r['rps']:.0f} | {r['errors']} |"
            )
        if "litellm proxy" in results:
            print(
                f"\nthroughput ratio tuneroute(auto)/litellm: "
                f"{results['tuneroute (auto)']['rps'] / results['litellm proxy']['rps']:.1f}x"
            )
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-backend":
        serve_backend(int(sys.argv[2]))
    else:
        main()
