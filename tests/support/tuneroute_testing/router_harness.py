"""Harness for the router tests: OpenAI-compatible fake backends (standing in for
vLLM, which needs a GPU; see fake_backend.py) and the router itself, started as
`python -m tuneroute_router` exactly as the image runs it."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml

from .process import Process, free_port, http_ok, metric


class Backend:
    """A fake OpenAI server on this machine; `host` is the address it listens on and its URL
    names (the real node's host address makes it reachable from pods)."""

    def __init__(self, name: str, tmp: Path, host: str = "127.0.0.1"):
        self.name, self.host, self.port = name, host, free_port()
        self.url = f"http://{host}:{self.port}/v1"
        health = f"http://{host}:{self.port}/health"
        self.proc = Process(
            [
                *(sys.executable, "-m", "tuneroute_testing.fake_backend"),
                *("--name", name, "--port", str(self.port), "--host", host),
            ],
            tmp / f"backend-{name}.log",
            lambda: http_ok(health),
            f"fake backend {name}",
        )

    def start(self) -> Backend:
        self.proc.start()
        return self

    def control(self, **kw) -> None:
        httpx.post(f"http://{self.host}:{self.port}/control", json=kw, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"http://{self.host}:{self.port}/stats", timeout=5).json()


class Router:
    def __init__(self, config_path: Path, tmp: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config_path = config_path
        self.log_path = tmp / "router.log"
        self.proc = Process(
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
            lambda: http_ok(f"{self.base}/readyz"),
            "the router",
        )

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample from /metrics (0 when absent)."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as r:
            return metric(r.read().decode(), name, **labels)

    def decision_lines(self) -> list[dict]:
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


EASY = "What is the capital of France?"


def ask(router: Router, text: str = EASY, model: str = "auto") -> tuple[Any, Any]:
    """One chat request through the router with the official openai client (no retries): the
    parsed response (ChatCompletion) and its headers (x-tuneroute-*)."""
    import openai

    client = openai.OpenAI(base_url=router.base + "/v1", api_key="unused", max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    return raw.parse(), raw.headers
