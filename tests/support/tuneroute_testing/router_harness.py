"""Harness for the router tests: OpenAI-compatible fake backends (standing in for
vLLM, which needs a GPU; see fake_backend.py) and the router itself, started as
`python -m tuneroute_router` exactly as the image runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from . import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll until cond() returns truthy; return its value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except (httpx.HTTPError, OSError) as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_exc!r})")


class Proc:
    def __init__(self, args: list[str], log_path: Path, ready_url: str):
        self.args, self.log_path, self.ready_url = args, log_path, ready_url
        self.p: subprocess.Popen | None = None

    def start(self) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        wait_for(
            lambda: self._alive() and httpx.get(self.ready_url, timeout=1).status_code == 200,
            timeout=60,
            what=f"{self.ready_url} ({self.log_path})",
        )
        return self

    def _alive(self) -> bool:
        if self.p.poll() is not None:
            raise AssertionError(f"process exited {self.p.returncode}: {self.log_path.read_text()[-2000:]}")
        return True

    def kill(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.log.close()


class Backend:
    def __init__(self, name: str, tmp: Path):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = Proc(
            [sys.executable, "-m", "tuneroute_testing.fake_backend", "--name", name, "--port", str(self.port)],
            tmp / f"backend-{name}.log",
            f"http://127.0.0.1:{self.port}/health",
        )

    def start(self) -> Backend:
        self.proc.start()
        return self

    def control(self, **kw) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/control", json=kw, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()


class Router:
    def __init__(self, config_path: Path, tmp: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config_path = config_path
        self.log_path = tmp / "router.log"
        self.proc = Proc(
            [
                sys.executable,
                "-m",
                "tuneroute_router",
                "--config",
                str(config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--reload-interval",
                "0.2",
            ],
            self.log_path,
            f"{self.base}/readyz",
        )

    def metric(self, name: str, **labels) -> float:
        """Value of one sample from /metrics (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", timeout=5).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            if key == name or (want and key == f"{name}{{{want}}}"):
                return float(val)
        return 0.0

    def decision_lines(self) -> list[dict]:
        import json

        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{") and '"event":"decision"' in line:
                out.append(json.loads(line))
        return out


def pool_entry(b: Backend, tier: int, **extra) -> dict:
    e = {
        "name": b.name,
        "url": b.url,
        "tier": tier,
        "contextWindow": 8192,
        "pricing": {"inputPerMillion": 0.1 * tier**2, "outputPerMillion": 0.4 * tier**2},
    }
    e.update(extra)
    return e


def write_config(path: Path, cfg: dict) -> Path:
    # write-then-rename, like a ConfigMap update: the router never sees a half-written file
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.replace(path)
    return path


def base_config(small: Backend, large: Backend, **top) -> dict:
    cfg = {
        "pool": [
            pool_entry(small, 1, capabilities={"tools": False}),
            pool_entry(large, 2, capabilities={"tools": True, "vision": True}, contextWindow=32768),
        ],
        "dispatch": {"failureThreshold": 2, "cooldownSeconds": 2.0, "retries": 1, "connectTimeoutSeconds": 1.0},
    }
    cfg.update(top)
    return cfg


def start_router(tmp: Path, cfg: dict) -> Router:
    r = Router(write_config(tmp / "router.yaml", cfg), tmp)
    r.proc.start()
    return r
