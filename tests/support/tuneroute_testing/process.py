"""Processes the tests start (the operator, the router, fake backends), and the one polling helper.

Polling is for what has nothing to watch: a process's HTTP endpoint, its metrics. Kubernetes
state is watched instead (tuneroute_testing.k8s.watch). Standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from . import REPO

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30,
    what: str = "the condition",
    interval: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call predicate() until it returns something truthy; return that, or raise TimeoutError.
    Exceptions of the `ignore` types count as not yet (e.g. a server not listening yet)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ignore as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last!r})" if last else ""))
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean (no line per request)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], path: str = "/") -> Iterator[str]:
    """A standard-library HTTP server running `handler` in a thread, on a free port of this
    machine; yields its URL (ending in `path`) and shuts it down afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class Process:
    """A child process writing to a log file. start() returns once `ready()` holds (polled: it is
    an HTTP probe), and fails at once with the log's tail if the process exits first."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        ready: Callable[[], bool],
        what: str,
        env: dict[str, str] | None = None,
    ):
        self.args, self.log_path, self.ready, self.what = args, log_path, ready, what
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._popen: subprocess.Popen | None = None

    @property
    def popen(self) -> subprocess.Popen:
        if self._popen is None:
            raise RuntimeError(f"{self.what} was never started")
        return self._popen

    def start(self, timeout: float = 60) -> Process:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self._popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=REPO
            )
        wait_until(self._ready, timeout, f"{self.what} ({self.log_path})", ignore=(OSError,))
        return self

    def _ready(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.what} exited with {self.popen.returncode}:\n{self.log_tail()}")
        return self.ready()

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the process."""
        if self.running():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.running():
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
