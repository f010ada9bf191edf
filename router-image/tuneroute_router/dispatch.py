"""Send a request to the decided models in order, with retries, fallback, circuits and limits.

Fallback happens only before anything reaches the client: on connect/transport errors,
429 and 5xx. Once a streaming response has started we are committed to that backend.

The upstream client is aiohttp rather than httpx: on this path httpx costs ~420 us per
request against aiohttp's ~125 us (measured on one core), which is most of the router's
own latency budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp
import orjson

from .circuit import Circuit, Gate
from .config import Dispatch, PoolModel
from .errors import JSON, error_body
from .metrics import Metrics

log = logging.getLogger("tuneroute.dispatch")

_JSON_HEADERS = {"content-type": JSON}


class Backend:
    """Live state of one pool model; survives config reloads while its identity is unchanged."""

    def __init__(self, m: PoolModel, d: Dispatch, key: str | None = None):
        self.model = m
        self.headers = _headers(key)
        self.circuit = Circuit(d.failure_threshold, d.cooldown_seconds)
        self.gate = Gate(m.max_concurrency)
        self.adapter_loaded = m.adapter is None
        self.adapter_lock = asyncio.Lock()  # one load_lora_adapter call at a time

    @staticmethod
    def identity(m: PoolModel) -> tuple:
        return (m.name, m.url, m.backend_model, m.max_concurrency, m.adapter)

    def update(self, m: PoolModel, d: Dispatch, key: str | None) -> None:
        self.model = m  # same identity; prices/tier/timeouts (and a rotated key) may change
        self.headers = _headers(key)
        self.circuit.threshold, self.circuit.cooldown = d.failure_threshold, d.cooldown_seconds


def _headers(key: str | None) -> dict[str, str]:
    return _JSON_HEADERS if key is None else {**_JSON_HEADERS, "authorization": f"Bearer {key}"}


def sync_backends(
    old: dict[str, Backend], pool: list[PoolModel], d: Dispatch, keys: dict[str, str] | None = None
) -> dict[str, Backend]:
    """Backends for a new pool, keeping circuit and gate state of unchanged models. `keys`: the API
    key each backend expects, by pool model name."""
    keys = keys or {}
    out = {}
    for m in pool:
        b = old.get(m.name)
        if b is not None and Backend.identity(b.model) == Backend.identity(m):
            b.update(m, d, keys.get(m.name))
        else:
            b = Backend(m, d, keys.get(m.name))
        out[m.name] = b
    return out


@dataclass
class Served:
    backend: Backend
    status: int
    content_type: str
    body: bytes | None  # None when streaming: read `response.content` as it arrives
    response: aiohttp.ClientResponse
    attempts: int
    backend_s: float

    @property
    def model_name(self) -> str | None:
        return self.backend.model.name


@dataclass
class Failed:
    status: int
    body: bytes  # OpenAI-style error JSON (ours or the last backend's)
    attempts: int
    backend_s: float
    last_model: str | None
    retry_after: int | None = None  # seconds, for a Retry-After header (a busy backend)

    @property
    def model_name(self) -> str | None:
        return self.last_model


class AdapterLoadError(Exception):
    pass


def _past_deadline(d: Dispatch, attempts: int, backend_s: float, last: Failed | None) -> Failed:
    message = f"no answer within dispatch.totalTimeoutSeconds ({d.total_timeout_seconds:g} s)"
    model = last.last_model if last else None
    return Failed(504, error_body(message, "server_error", "deadline_exceeded"), attempts, backend_s, model)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _unknown_model(body: bytes) -> bool:
    """In a 404: vLLM's answer for a model name it does not serve ("The model `x` does not exist.").
    The route's config says this backend serves that name, so the backend is at fault: a restarted
    vLLM that forgot a runtime-loaded adapter, or a replica that predates the adapter's rollout."""
    return b"does not exist" in body


class Dispatcher:
    def __init__(self, session: aiohttp.ClientSession, metrics: Metrics):
        self.session = session
        self.metrics = metrics

    def record_failure(self, b: Backend) -> None:
        """A failed attempt (or a stream that broke): counts towards opening the circuit."""
        if b.circuit.failure():
            self.metrics.circuit_open.labels(b.model.name).set(1)
            log.warning("circuit opened for %s", b.model.name)

    def _record_success(self, b: Backend) -> None:
        if b.circuit.opened_at is not None:
            log.info("circuit closed for %s", b.model.name)
        b.circuit.success()
        self.metrics.circuit_open.labels(b.model.name).set(0)

    def release(self, b: Backend) -> None:
        """Give back the slot a served request held (a stream holds it until it ends)."""
        b.gate.leave()
        self.metrics.in_flight.labels(b.model.name).set(b.gate.in_flight)

    async def _ensure_adapter(self, b: Backend, d: Dispatch) -> None:
        """Ask vLLM to load the LoRA adapter once (POST {url}/load_lora_adapter)."""
        a = b.model.adapter
        if b.adapter_loaded or a is None:
            return
        async with b.adapter_lock:
            if b.adapter_loaded:
                return
            async with self.session.post(
                b.model.url.rstrip("/") + "/load_lora_adapter",
                data=orjson.dumps({"lora_name": a.name, "lora_path": a.path}),
                headers=b.headers,
                timeout=aiohttp.ClientTimeout(total=b.model.timeout_seconds, sock_connect=d.connect_timeout_seconds),
            ) as r:
                text = await r.text()
            # vLLM answers 400 "...already been loaded" when another replica of us won the race
            if r.status == 200 or (r.status == 400 and "already" in text.lower()):
                b.adapter_loaded = True
                log.info("loaded adapter %s on %s", a.name, b.model.name)
                return
            raise AdapterLoadError(f"load_lora_adapter on {b.model.name}: {r.status} {text[:200]}")

    async def _post(self, b: Backend, path: str, payload: bytes, stream: bool, d: Dispatch, deadline: float):
        m, left = b.model, deadline - time.monotonic()
        # The deadline bounds the wait for an answer (a stream's first bytes), not a stream.
        return await asyncio.wait_for(
            self.session.post(
                m.url.rstrip("/") + path,
                data=payload,
                headers=b.headers,
                timeout=aiohttp.ClientTimeout(
                    total=None if stream else min(m.timeout_seconds, max(left, 0.001)),
                    sock_connect=d.connect_timeout_seconds,
                    sock_read=m.timeout_seconds,
                ),
            ),
            max(left, 0.001),
        )

    async def send(
        self, candidates: list[Backend], body: dict, path: str, stream: bool, d: Dispatch
    ) -> Served | Failed:
        attempts, backend_s = 0, 0.0
        last: Failed | None = None
        budget = 1 + d.retries
        viable = [b for b in candidates if b.circuit.state != "open"]
        deadline = time.monotonic() + d.total_timeout_seconds
        for i, b in enumerate(viable):
            if attempts >= budget:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                last = _past_deadline(d, attempts, backend_s, last)
                break
            later = i + 1 < len(viable)
            if b.gate.busy() and later:
                continue  # at its limit: prefer the next model to queueing
            # Serialised before a slot or a half-open trial is taken: nothing raised here can hold one.
            payload = orjson.dumps({**body, "model": b.model.backend_model})
            if not b.circuit.allow():
                continue
            if not await b.gate.enter(min(d.connect_timeout_seconds, left)):
                b.circuit.release_trial()
                last = Failed(
                    503,
                    error_body(f"model {b.model.name} is at its concurrency limit", "server_error", "backend_busy"),
                    attempts,
                    backend_s,
                    b.model.name,
                    retry_after=1,
                )
                continue
            self.metrics.in_flight.labels(b.model.name).set(b.gate.in_flight)
            attempts += 1
            m = b.model
            t = time.perf_counter()
            keep_gate = False
            try:
                await self._ensure_adapter(b, d)
                resp = await self._post(b, path, payload, stream, d, deadline)
                answer: bytes | None = None
                if resp.status == 404:
                    answer = await resp.read()
                    resp.release()
                    if _unknown_model(answer) and m.adapter is not None:
                        # a restarted vLLM forgets runtime-loaded adapters: load it again, resend once
                        log.warning("backend %s lost adapter %s: loading it again", m.name, m.adapter.name)
                        b.adapter_loaded = False
                        await self._ensure_adapter(b, d)
                        resp = await self._post(b, path, payload, stream, d, deadline)
                        answer = None
                        if resp.status == 404:
                            answer = await resp.read()
                            resp.release()
                if answer is not None and _unknown_model(answer):
                    backend_s += time.perf_counter() - t
                    self.record_failure(b)
                    log.warning("backend %s does not serve %s", m.name, m.backend_model)
                    message = f"the backend of model {m.name} does not serve {m.backend_model} (yet)"
                    body_ = error_body(message, "server_error", "backend_missing_model")
                    last = Failed(503, body_, attempts, backend_s, m.name)
                    continue
                if _retryable(resp.status):
                    refusal = await resp.read()
                    resp.release()
                    backend_s += time.perf_counter() - t
                    self.record_failure(b)
                    log.warning("backend %s answered %s: %s", m.name, resp.status, refusal[:300])
                    if resp.status >= 500:
                        # A backend's 5xx body may hold stack traces, paths or hosts: logged, not relayed.
                        refusal = error_body(
                            f"model {m.name} failed with HTTP {resp.status}", "server_error", "backend_error"
                        )
                    last = Failed(resp.status, refusal, attempts, backend_s, m.name)
                    continue
                data: bytes | None = answer
                if data is None and (not stream or resp.status != 200):
                    data = await resp.read()
                    resp.release()
                else:
                    keep_gate = True  # released when the stream ends
                backend_s += time.perf_counter() - t
                self._record_success(b)  # a 4xx is the client's fault, the backend is healthy
                ctype = resp.headers.get("content-type", "application/json")
                return Served(b, resp.status, ctype, data, resp, attempts, backend_s)
            except (TimeoutError, aiohttp.ClientError, AdapterLoadError) as e:
                backend_s += time.perf_counter() - t
                if isinstance(e, TimeoutError) and time.monotonic() >= deadline - 0.01:
                    # Cut by the request's deadline, not the backend's own timeout: not its failure.
                    b.circuit.release_trial()
                    last = _past_deadline(d, attempts, backend_s, last)
                    break
                self.record_failure(b)
                log.warning("backend %s failed: %s", m.name, type(e).__name__)
                last = Failed(
                    502,
                    error_body(
                        f"model {m.name} is unreachable ({type(e).__name__})", "server_error", "backend_unreachable"
                    ),
                    attempts,
                    backend_s,
                    m.name,
                )
            except BaseException:
                b.circuit.release_trial()
                raise
            finally:
                if not keep_gate:
                    self.release(b)
        if last is None:
            last = Failed(
                503,
                error_body(
                    "no backend available: every candidate's circuit is open", "server_error", "no_backend_available"
                ),
                attempts,
                backend_s,
                None,
            )
        last.attempts, last.backend_s = attempts, backend_s
        return last
