"""Router memory under hostile JSON bodies: with the element pre-scan (server.maxJsonElements,
the default) against the same router with the pre-scan raised out of the way.

    python bench/router_hostile_bodies.py [--mib 4 --concurrent 3]

For each setting, starts the router (`python -m tuneroute_router`, one fake backend) and reads
its resident memory (/proc/PID/status VmRSS) once ready; sends `--concurrent` bodies of
`--mib` MiB of empty arrays at once (`{"model": ..., "metadata": [[],[],...]}`), then prints the
answers, the peak resident memory (VmHWM) and the growth over the idle figure. Bounded: about
30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from tuneroute_testing.router_harness import Backend, base_config, start_router


def _status(pid: int, field: str) -> float:
    """A /proc/PID/status memory field, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def hostile(mib: float) -> bytes:
    head = b'{"model": "small", "messages": [{"role": "user", "content": "hi"}], "metadata": ['
    n = int(mib * 1024 * 1024 / 3)
    return head + b"[]," * n + b"[]]}"


async def _send(base: str, body: bytes, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        rs = await asyncio.gather(
            *[
                c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
                for _ in range(n)
            ]
        )
    return [r.status_code for r in rs]


def measure(tmp: Path, backend: Backend, server: dict, body: bytes, n: int) -> dict:
    router = start_router(tmp, base_config(backend, backend, server=server) | {"pool": [_entry(backend)]})
    try:
        pid = router.proc.popen.pid
        idle = _status(pid, "VmRSS")
        t = time.perf_counter()
        statuses = asyncio.run(_send(router.base, body, n))
        seconds = time.perf_counter() - t
        return {"idle": idle, "peak": _status(pid, "VmHWM"), "statuses": statuses, "seconds": seconds}
    finally:
        router.proc.stop()


def _entry(b: Backend) -> dict:
    return {"name": b.name, "url": b.url, "tier": 1, "contextWindow": 8192}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=float, default=4.0, help="size of each hostile body")
    ap.add_argument("--concurrent", type=int, default=3, help="hostile bodies sent at once")
    args = ap.parse_args()
    body = hostile(args.mib)
    print(f"body: {len(body) / 2**20:.2f} MiB of empty arrays, {args.concurrent} at once")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        backend = Backend("small", tmp).start()
        try:
            size = {"maxBodyBytes": max(len(body) + 1024, 4 * 1024 * 1024)}
            runs = {
                "pre-scan off (maxJsonElements 10M)": measure(
                    tmp, backend, size | {"maxJsonElements": 10_000_000}, body, args.concurrent
                ),
                "pre-scan on (default)": measure(tmp, backend, size, body, args.concurrent),
            }
        finally:
            backend.proc.stop()
    for name, r in runs.items():
        print(
            f"{name:36s} answers {r['statuses']}  idle {r['idle']:.0f} MiB  peak {r['peak']:.0f} MiB  "
            f"growth {r['peak'] - r['idle']:.0f} MiB  in {r['seconds']:.2f} s"
        )
    off, on = runs.values()
    ratio = (off["peak"] - off["idle"]) / max(on["peak"] - on["idle"], 1)
    print(f"growth with the pre-scan off / on: {ratio:.0f}x")


if __name__ == "__main__":
    main()
