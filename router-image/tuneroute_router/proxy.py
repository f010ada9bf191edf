"""The OpenAI endpoints' request path: check, decide, dispatch, answer; account and log."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from . import auth, decision_log, policy
from .accounting import Accounting, Usage, usage_of_body
from .dispatch import Dispatcher, Failed, Served
from .errors import JSON, error_response, model_not_allowed, unauthorized
from .features import RequestView
from .live_config import LiveConfig, State
from .metrics import Metrics
from .openai_request import Endpoint, parse, read_body
from .relay import relay


async def _until_disconnect(request: Request) -> None:
    # The body has been read: the next ASGI message can only be the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Any) -> Any:
    """`work`'s result, or None when the client disconnects first: then `work` is cancelled, so
    that the backend's request (and the slot it holds) ends with the client's, not minutes later."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


# A client's x-request-id goes into every decision log line: at most this long, and plain.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id(given: str | None) -> str:
    """The client's request id when it is short and plain, else a fresh one."""
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class NotReady(Exception):
    """The classifier has not loaded yet: the virtual model cannot be routed."""


class Proxy:
    def __init__(self, live: LiveConfig, metrics: Metrics, dispatcher: Dispatcher):
        self.live = live
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.accounting = Accounting(metrics)

    async def handle(self, request: Request, endpoint: Endpoint, viewer: Callable[[dict], RequestView]) -> Response:
        t0 = time.perf_counter()
        st = self.live.state  # one config for the whole request, even if a reload swaps it meanwhile
        cfg = st.cfg
        who = auth.caller(st.keys, request.headers)
        if who is None:
            return unauthorized()
        try:
            async with asyncio.timeout(cfg.server.body_timeout_seconds):
                raw = await read_body(request, cfg.server.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=499)
        except TimeoutError:
            message = (
                f"request body not received within server.bodyTimeoutSeconds ({cfg.server.body_timeout_seconds:g} s)"
            )
            return error_response(
                408, message, "invalid_request_error", "body_timeout", headers={"connection": "close"}
            )
        body = parse(raw, cfg.server, endpoint)
        if isinstance(body, Response):
            return body
        if not auth.may_use(cfg.auth.allowed_models, who, body["model"]):
            return model_not_allowed(who, body["model"], cfg.auth.allowed_models[who])
        view = viewer(body)
        try:
            decision, classify_s = self._decide(st, body["model"], view, body)
        except policy.NoCapableModel as e:
            return error_response(400, str(e), "invalid_request_error", "no_capable_model")
        except NotReady:
            return error_response(503, "router is starting: classifier not loaded yet", "server_error", "not_ready")
        if decision is None:
            message = f"model '{body['model']}' does not exist; use '{cfg.virtual_model}' or a pool model"
            return error_response(404, message, "invalid_request_error", "model_not_found", "model")

        stream = body.get("stream") is True
        backends = [st.backends[m.name] for m in decision.candidates]
        result = await _unless_client_leaves(
            request, self.dispatcher.send(backends, body, endpoint.path, stream, cfg.dispatch)
        )
        if result is None:
            return Response(status_code=499)  # the client went away: its backend request was cancelled
        rec = decision_log.record(
            request_id(request.headers.get("x-request-id")),
            body["model"],
            decision,
            stream,
            classify_s,
            view.text if cfg.server.log_prompts else None,
        )
        headers = {
            "x-tuneroute-tier": str(decision.tier),
            "x-tuneroute-score": "none" if decision.score is None else f"{decision.score:.3f}",
            "x-tuneroute-attempts": str(result.attempts),
        }
        if decision.adapter_score is not None:
            headers["x-tuneroute-adapter-score"] = f"{decision.adapter_score:.3f}"
        if isinstance(result, Failed):
            return self._failed(result, decision, headers, rec, t0)
        return self._served(st, result, decision, headers, rec, t0)

    def _decide(
        self, st: State, model: str, view: RequestView, body: dict[str, Any]
    ) -> tuple[policy.Decision | None, float]:
        """(decision, seconds spent classifying); no decision for a model the route lacks."""
        cfg = st.cfg
        if model != cfg.virtual_model:
            m = cfg.by_name(model)
            return (policy.direct(cfg, m) if m else None), 0.0
        clf = self.live.classifier
        if clf is None:
            raise NotReady
        t = time.perf_counter()
        scored = clf.score(view) if view.text.strip() else None
        nearest = st.examples.nearest(scored.emb) if (scored and st.examples) else None
        decision = policy.adapters_last(policy.decide(cfg, view, body, scored.p_levels if scored else None, nearest))
        if scored is not None and st.adapters is not None:
            # inside an adapter's routing profile, among the models that meet the request's constraints
            match = st.adapters.best(scored.emb, {m.name for m in decision.candidates})
            if match is not None:
                adapter = next(m for m in decision.candidates if m.name == match.name)
                decision = policy.prefer_adapter(decision, adapter, match.p)
        classify_s = time.perf_counter() - t
        self.metrics.classify.observe(classify_s)
        return decision, classify_s

    def _failed(
        self, result: Failed, decision: policy.Decision, headers: dict[str, str], rec: dict, t0: float
    ) -> Response:
        """Every candidate failed: the last error (ours or the backend's) with the headers."""
        overhead = time.perf_counter() - t0 - result.backend_s
        headers |= {
            "x-tuneroute-model": result.last_model or "none",
            "x-tuneroute-reason": decision.reason + ("+fallback" if result.attempts > 1 else ""),
            "x-tuneroute-overhead-ms": f"{overhead * 1e3:.3f}",
        }
        if result.retry_after is not None:
            headers["retry-after"] = str(result.retry_after)
        self.metrics.requests.labels(result.last_model or "none", "failed").inc()
        decision_log.write(rec, result, overhead)
        return Response(result.body, result.status, headers=headers, media_type=JSON)

    def _served(
        self, st: State, served: Served, decision: policy.Decision, headers: dict[str, str], rec: dict, t0: float
    ) -> Response:
        sm = served.backend.model
        reason = decision.reason + ("+fallback" if sm is not decision.candidates[0] else "")
        self.metrics.decisions.labels(str(sm.tier), reason).inc()
        self.metrics.backend.labels(sm.name).observe(served.backend_s)
        outcome = "ok" if served.status < 400 else "client_error"
        headers |= {"x-tuneroute-model": sm.name, "x-tuneroute-tier": str(sm.tier), "x-tuneroute-reason": reason}
        overhead = time.perf_counter() - t0 - served.backend_s
        headers["x-tuneroute-overhead-ms"] = f"{overhead * 1e3:.3f}"
        self.metrics.overhead.observe(overhead)

        def finished(usage: Usage, broken: bool = False, streaming_s: float = 0.0) -> None:
            self.accounting.record(sm, st.strongest, usage, "stream_broken" if broken else outcome)
            decision_log.write(rec, served, overhead, usage, streaming_s, broken)

        if served.body is not None:
            finished(usage_of_body(served.body) if served.status == 200 else Usage())
            return Response(served.body, served.status, headers=headers, media_type=served.content_type)

        return StreamingResponse(
            relay(served, self.dispatcher, finished), served.status, headers=headers, media_type=served.content_type
        )
