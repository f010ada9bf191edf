"""HTTP surface: OpenAI-compatible endpoints, probes, metrics, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import auth, policy
from .classifier import Classifier, ExampleIndex
from .config import ConfigError, PoolModel, RouterConfig, load_config
from .dispatch import Backend, Dispatcher, Failed, Served, error_body, sync_backends
from .features import RequestView, view_chat, view_completion
from .metrics import Metrics

log = logging.getLogger("tuneroute.server")
decision_log = logging.getLogger("tuneroute.decision")

_JSON = "application/json"


@dataclass(frozen=True)
class State:
    """One loaded config and everything derived from it; swapped whole on reload."""

    cfg: RouterConfig
    backends: dict[str, Backend]
    keys: frozenset[bytes] | None
    examples: ExampleIndex | None
    strongest: PoolModel  # baseline for "cost saved"
    signature: tuple


def _err(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None, headers=None
) -> Response:
    return Response(error_body(message, type_, code, param), status, headers=headers, media_type=_JSON)


def _usage(obj: dict) -> tuple[int, int]:
    u = obj.get("usage") or {}
    return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)


def _usage_from_sse(tail: bytes) -> tuple[int, int]:
    """Usage from the last SSE event that carries one (present when the client asked for it)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                return _usage(orjson.loads(line[5:]))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                return 0, 0
    return 0, 0


def _cost(m: PoolModel, p: int, c: int) -> float:
    return (p * m.pricing.input_per_million + c * m.pricing.output_per_million) / 1e6


class Router:
    def __init__(
        self,
        config_path: str | Path,
        classifier_factory: Callable[[], Classifier] = Classifier,
        reload_interval: float = 1.0,
    ):
        self.config_path = Path(config_path)
        self.classifier_factory = classifier_factory
        self.reload_interval = reload_interval
        self.metrics = Metrics()
        self.classifier: Classifier | None = None
        self.state: State | None = None
        self.session: aiohttp.ClientSession | None = None
        self.dispatcher: Dispatcher | None = None
        self._bad_signature: tuple | None = None
        self._tasks: list[asyncio.Task] = []
        # Fail fast at start: a pod with an unusable config should crash, not serve.
        self.state = self._build(self._signature(), None)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    # ---- lifecycle -------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        # per-backend limits are our Gates; the connector only pools keep-alive connections
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=30),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.dispatcher = Dispatcher(self.session, self.metrics)
        self._tasks = [
            asyncio.create_task(self._load_classifier()),
            asyncio.create_task(self._watch()),
        ]
        try:
            yield
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.session.close()

    async def _load_classifier(self) -> None:
        try:
            clf = await asyncio.to_thread(self.classifier_factory)
        except Exception:
            # stay unready (readyz 503) with the reason in the log; direct pool requests still work
            log.exception("classifier failed to load; routing of the virtual model is unavailable")
            return
        st = self.state
        examples = await asyncio.to_thread(self._examples, st.cfg, clf)
        self.classifier = clf
        gc.collect()
        gc.freeze()  # long-lived startup objects out of the GC's way: fewer, shorter pauses (p99)
        # the config may have been reloaded meanwhile; attach examples only to the one we read
        if self.state is st:
            self.state = State(st.cfg, st.backends, st.keys, examples, st.strongest, st.signature)
        else:
            await asyncio.to_thread(self.reload, True)
        log.info("classifier ready")

    def _signature(self) -> tuple:
        try:
            raw = self.config_path.read_bytes()
        except OSError:
            return ("unreadable",)
        digest = hashlib.sha256(raw).hexdigest()
        # keys path of the config in effect; _build recomputes it for a new config
        st = self.state
        keys_path = st.cfg.auth.api_keys_path if st else None
        return (digest, auth.keys_signature(keys_path))

    @staticmethod
    def _examples(cfg: RouterConfig, clf: Classifier | None) -> ExampleIndex | None:
        if clf is None or not cfg.policy.examples:
            return None
        grouped: dict[int, list[str]] = {}
        for e in cfg.policy.examples:
            grouped.setdefault(e.tier, []).extend(e.prompts)
        return ExampleIndex(clf.embedder, grouped)

    def _build(self, signature: tuple, old: State | None) -> State:
        cfg = load_config(self.config_path)
        keys = auth.load_keys(cfg.auth.api_keys_path) if cfg.auth.api_keys_path else None
        backends = sync_backends(old.backends if old else {}, cfg.pool, cfg.dispatch)
        strongest = max(cfg.pool, key=lambda m: (m.tier, m.pricing.input_per_million + m.pricing.output_per_million))
        # recompute the signature with this config's keys path, so key rotation is noticed
        sig = (signature[0], auth.keys_signature(cfg.auth.api_keys_path))
        return State(cfg, backends, keys, self._examples(cfg, self.classifier), strongest, sig)

    def reload(self, force: bool = False) -> bool | None:
        """Reload when the file or keys changed. True: swapped; False: refused; None: unchanged."""
        sig = self._signature()
        if not force and (sig == self.state.signature or sig == self._bad_signature):
            return None
        try:
            new = self._build(sig, self.state)
        except (ConfigError, auth.KeysError) as e:
            self._bad_signature = sig
            self.metrics.reloads.labels("refused").inc()
            log.error("config reload refused, keeping the previous config: %s", e)
            return False
        self.state, self._bad_signature = new, None
        self.metrics.reloads.labels("ok").inc()
        log.info("config reloaded: %d pool models", len(new.cfg.pool))
        return True

    async def _watch(self) -> None:
        # Polling, not inotify: a ConfigMap update is a symlink swap of the parent dir,
        # which content hashing sees reliably.
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # never let the watcher die
                log.exception("config watcher error")

    # ---- probes ----------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        if self.state is None or self.classifier is None:
            return Response(b'{"status":"loading"}', 503, media_type=_JSON)
        return Response(b'{"status":"ready"}', media_type=_JSON)

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- OpenAI API ------------------------------------------------------

    def _authorized(self, request: Request, st: State) -> bool:
        return st.keys is None or auth.check(st.keys, auth.presented_key(request.headers))

    async def models(self, request: Request) -> Response:
        st = self.state
        if not self._authorized(request, st):
            return _err(401, "missing or invalid API key", "authentication_error", "invalid_api_key")
        data = [{"id": st.cfg.virtual_model, "object": "model", "created": 0, "owned_by": "tuneroute"}]
        data += [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "tuneroute", "tier": m.tier}
            for m in st.cfg.pool
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def chat(self, request: Request) -> Response:
        return await self._proxy(request, "/chat/completions", view_chat, "messages")

    async def completions(self, request: Request) -> Response:
        return await self._proxy(request, "/completions", view_completion, "prompt")

    async def _read_body(self, request: Request, limit: int) -> bytes | None:
        """The body, or None when it exceeds the limit (stops reading early)."""
        cl = request.headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _proxy(self, request: Request, path: str, viewer, required: str) -> Response:
        t0 = time.perf_counter()
        st = self.state
        cfg = st.cfg
        if not self._authorized(request, st):
            return _err(401, "missing or invalid API key", "authentication_error", "invalid_api_key")
        try:
            raw = await self._read_body(request, cfg.server.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=499)
        if raw is None:
            return _err(
                413,
                f"request body exceeds {cfg.server.max_body_bytes} bytes",
                "invalid_request_error",
                "body_too_large",
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _err(400, "request body is not valid JSON", "invalid_request_error", "invalid_json")
        if not isinstance(body, dict):
            return _err(400, "request body must be a JSON object", "invalid_request_error", "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _err(400, "'model' is required", "invalid_request_error", "missing_model", "model")
        need = body.get(required)
        if required == "messages" and (not isinstance(need, list) or not need):
            return _err(
                400, "'messages' must be a non-empty array", "invalid_request_error", "invalid_messages", "messages"
            )
        if required == "prompt" and not isinstance(need, (str, list)):
            return _err(400, "'prompt' is required", "invalid_request_error", "missing_prompt", "prompt")
        stream = body.get("stream") is True
        view = viewer(body)

        try:
            if model == cfg.virtual_model:
                decision, classify_s = self._route(st, view, body)
            elif (m := cfg.by_name(model)) is not None:
                decision, classify_s = policy.direct(cfg, m), 0.0
            else:
                return _err(
                    404,
                    f"model '{model}' does not exist; use '{cfg.virtual_model}' or a pool model",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
        except policy.NoCapableModel as e:
            return _err(400, str(e), "invalid_request_error", "no_capable_model")
        except _NotReady:
            return _err(503, "router is starting: classifier not loaded yet", "server_error", "not_ready")

        backends = [st.backends[m.name] for m in decision.candidates]
        result = await self.dispatcher.send(backends, body, path, stream, cfg.dispatch)
        base = {
            "x-tuneroute-tier": str(decision.tier),
            "x-tuneroute-score": "none" if decision.score is None else f"{decision.score:.3f}",
            "x-tuneroute-attempts": str(result.attempts),
        }
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        record = {
            "event": "decision",
            "request_id": rid,
            "requested": model,
            "tier": decision.tier,
            "score": None if decision.score is None else round(decision.score, 4),
            "reason": decision.reason,
            "candidates": [m.name for m in decision.candidates],
            "attempts": result.attempts,
            "stream": stream,
            "classify_ms": round(classify_s * 1e3, 3),
        }
        if cfg.server.log_prompts:
            record["prompt"] = view.text

        if isinstance(result, Failed):
            overhead = time.perf_counter() - t0 - result.backend_s
            reason = decision.reason + ("+fallback" if result.attempts > 1 else "")
            headers = {
                **base,
                "x-tuneroute-model": result.last_model or "none",
                "x-tuneroute-reason": reason,
                "x-tuneroute-overhead-ms": f"{overhead * 1e3:.3f}",
            }
            self.metrics.requests.labels(result.last_model or "none", "failed").inc()
            self._log(
                record, status=result.status, model=result.last_model, overhead=overhead, backend_s=result.backend_s
            )
            return Response(result.body, result.status, headers=headers, media_type=_JSON)

        served: Served = result
        sm = served.backend.model
        fell_back = sm is not decision.candidates[0]
        reason = decision.reason + ("+fallback" if fell_back else "")
        self.metrics.decisions.labels(str(sm.tier), reason).inc()
        self.metrics.backend.labels(sm.name).observe(served.backend_s)
        status = served.status
        outcome = "ok" if status < 400 else "client_error"
        headers = {**base, "x-tuneroute-model": sm.name, "x-tuneroute-tier": str(sm.tier), "x-tuneroute-reason": reason}
        if served.body is not None:
            p = c = 0
            if status == 200:
                with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                    p, c = _usage(orjson.loads(served.body))
            self._account(st, sm, p, c, outcome)
            overhead = time.perf_counter() - t0 - served.backend_s
            headers["x-tuneroute-overhead-ms"] = f"{overhead * 1e3:.3f}"
            self.metrics.overhead.observe(overhead)
            self._log(
                record, status=status, model=sm.name, overhead=overhead, backend_s=served.backend_s, tokens=(p, c)
            )
            return Response(served.body, status, headers=headers, media_type=served.content_type)

        overhead = time.perf_counter() - t0 - served.backend_s
        headers["x-tuneroute-overhead-ms"] = f"{overhead * 1e3:.3f}"
        self.metrics.overhead.observe(overhead)
        return StreamingResponse(
            self._relay(st, served, record, overhead, outcome),
            status,
            headers=headers,
            media_type=served.content_type,
        )

    async def _relay(self, st: State, served: Served, record: dict, overhead: float, outcome: str):
        """Pass SSE bytes through as they arrive; account and log when the stream ends."""
        b, resp = served.backend, served.response
        tail = b""
        t = time.perf_counter()
        broken = finished = False
        try:
            async for chunk in resp.content.iter_any():
                if b'"usage"' in chunk:
                    tail = chunk
                yield chunk
            finished = True
        except (TimeoutError, aiohttp.ClientError) as e:
            # Too late to fall back: the client already has part of the answer. Re-raise so
            # the server aborts the response and the client sees a broken stream, not a
            # clean end without [DONE].
            broken = True
            self.dispatcher._failed(b)
            log.warning("stream from %s broke: %s", b.model.name, type(e).__name__)
            raise
        finally:
            if finished:
                resp.release()
            else:
                resp.close()  # broken or client gone: the connection is mid-response, drop it
            self.dispatcher.release(b)
            p, c = _usage_from_sse(tail)
            self._account(st, b.model, p, c, "stream_broken" if broken else outcome)
            self._log(
                record,
                status=served.status,
                model=b.model.name,
                overhead=overhead,
                backend_s=served.backend_s + time.perf_counter() - t,
                tokens=(p, c),
                broken=broken,
            )

    def _route(self, st: State, view: RequestView, body: dict) -> tuple[policy.Decision, float]:
        clf = self.classifier
        if clf is None:
            raise _NotReady
        t = time.perf_counter()
        scored = clf.score(view) if view.text.strip() else None
        nearest = st.examples.nearest(scored.emb) if (scored and st.examples) else None
        dt = time.perf_counter() - t
        self.metrics.classify.observe(dt)
        return policy.decide(st.cfg, view, body, scored.p_hard if scored else None, nearest), dt

    def _account(self, st: State, m: PoolModel, p: int, c: int, outcome: str) -> None:
        self.metrics.requests.labels(m.name, outcome).inc()
        if p or c:
            self.metrics.tokens.labels(m.name, "prompt").inc(p)
            self.metrics.tokens.labels(m.name, "completion").inc(c)
            cost = _cost(m, p, c)
            self.metrics.cost.labels(m.name).inc(cost)
            saved = _cost(st.strongest, p, c) - cost
            if saved > 0:
                self.metrics.saved.inc(saved)

    def _log(
        self,
        record: dict,
        *,
        status: int,
        model: str | None,
        overhead: float,
        backend_s: float,
        tokens=(0, 0),
        broken=False,
    ) -> None:
        if not decision_log.isEnabledFor(logging.INFO):
            return
        record.update(
            status=status,
            model=model,
            overhead_ms=round(overhead * 1e3, 3),
            backend_ms=round(backend_s * 1e3, 3),
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
        )
        if broken:
            record["stream_broken"] = True
        decision_log.info(orjson.dumps(record).decode())


class _NotReady(Exception):
    pass


def create_app(config_path: str | Path, **kw) -> Starlette:
    return Router(config_path, **kw).app
