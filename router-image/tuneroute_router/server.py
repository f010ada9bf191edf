"""The router's HTTP surface: the OpenAI endpoints, probes and metrics, wired to their parts.

The parts, each testable alone: live_config (the config in effect, hot reload), auth (API
keys), openai_request (body checks), proxy (decide, dispatch, answer), dispatch (retries,
fallback, circuits, limits), relay (streaming), accounting (tokens, cost), decision_log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import auth
from .classifier import Classifier
from .config import Server
from .dispatch import Dispatcher
from .errors import JSON, unauthorized
from .features import view_chat, view_completion
from .http_limits import InFlightCap
from .live_config import LiveConfig
from .metrics import Metrics
from .openai_request import CHAT, COMPLETIONS
from .proxy import Proxy

log = logging.getLogger("tuneroute.server")


class Router:
    def __init__(
        self,
        config_path: str | Path,
        classifier_factory: Callable[[], Classifier] = Classifier,
        reload_interval: float = 1.0,
    ):
        self.classifier_factory = classifier_factory
        self.reload_interval = reload_interval
        self.metrics = Metrics()
        self.live = LiveConfig(config_path, self.metrics)  # raises ConfigError / KeysError
        self._proxy: Proxy | None = None  # needs an HTTP client session, made at startup
        if self.live.state.keys is None:
            log.warning("authentication is off (no auth.apiKeysPath): whoever reaches this router may use every model")
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
            middleware=[Middleware(InFlightCap, limits=self.limits, refused=self._refused_in_flight)],
        )

    def limits(self) -> Server:
        """The server limits of the config in effect (http_limits reads them per connection/request)."""
        return self.live.state.cfg.server

    def _refused_in_flight(self) -> None:
        self.metrics.refused.labels("maxInFlight").inc()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # per-backend limits are the dispatcher's gates; the connector only pools keep-alive connections
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=30),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._proxy = Proxy(self.live, self.metrics, Dispatcher(session, self.metrics))
        tasks = [
            asyncio.create_task(self._load_classifier()),
            asyncio.create_task(self.live.watch(self.reload_interval)),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()

    async def _load_classifier(self) -> None:
        try:
            clf = await asyncio.to_thread(self.classifier_factory)
        except Exception:
            # stay unready (readyz 503) with the reason in the log; direct pool requests still work
            log.exception("classifier failed to load; routing of the virtual model is unavailable")
            return
        await self.live.use_classifier(clf)
        gc.collect()
        gc.freeze()  # long-lived startup objects out of the GC's way: fewer, shorter pauses (p99)
        log.info("classifier ready")

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the router serves requests only once started")
        return self._proxy

    async def chat(self, request: Request) -> Response:
        return await self.proxy.handle(request, CHAT, view_chat)

    async def completions(self, request: Request) -> Response:
        return await self.proxy.handle(request, COMPLETIONS, view_completion)

    async def models(self, request: Request) -> Response:
        st = self.live.state
        who = auth.caller(st.keys, request.headers)
        if who is None:
            return unauthorized()
        may_use = st.cfg.auth.allowed_models  # a key with an allow-list sees only what it may use
        data: list[dict[str, object]] = []
        if auth.may_use(may_use, who, st.cfg.virtual_model):
            data.append({"id": st.cfg.virtual_model, "object": "model", "created": 0, "owned_by": "tuneroute"})
        data += [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "tuneroute", "tier": m.tier}
            for m in st.cfg.pool
            if auth.may_use(may_use, who, m.name)
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(self, request: Request) -> Response:
        if self.live.classifier is None:
            return Response(b'{"status":"loading"}', 503, media_type=JSON)
        return Response(b'{"status":"ready"}', media_type=JSON)

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
