"""Reading and checking an OpenAI request body before anything is routed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .config import Server
from .errors import error_response
from .http_limits import too_many_elements


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (reading stops as soon as it does)."""
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


@dataclass(frozen=True)
class Endpoint:
    path: str  # appended to the backend's base URL
    required: str  # the field the endpoint cannot do without: messages or prompt


CHAT = Endpoint("/chat/completions", "messages")
COMPLETIONS = Endpoint("/completions", "prompt")


# orjson reads 1,024 levels of nesting but writes only about 254 back; real requests nest a handful.
MAX_DEPTH = 64


def _nests_deeper(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _invalid(status: int, message: str, code: str, param: str | None = None) -> Response:
    return error_response(status, message, "invalid_request_error", code, param)


def parse(raw: bytes | None, limits: Server, endpoint: Endpoint) -> dict[str, Any] | Response:
    """The request as a dict, or the OpenAI-style error response that refuses it."""
    if raw is None:
        return _invalid(413, f"request body exceeds {limits.max_body_bytes} bytes", "body_too_large")
    if too_many_elements(raw, limits.max_json_elements):
        message = (
            f"request body holds more than {limits.max_json_elements} JSON elements ('[', '{{' and ',' "
            "counted, server.maxJsonElements)"
        )
        return _invalid(413, message, "too_many_elements")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _invalid(400, "request body is not valid JSON", "invalid_json")
    if not isinstance(body, dict):
        return _invalid(400, "request body must be a JSON object", "invalid_json")
    if _nests_deeper(body, MAX_DEPTH):
        return _invalid(400, f"request body nests deeper than {MAX_DEPTH} levels", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid(400, "'model' is required", "missing_model", "model")
    need = body.get(endpoint.required)
    if endpoint.required == "messages" and (not isinstance(need, list) or not need):
        return _invalid(400, "'messages' must be a non-empty array", "invalid_messages", "messages")
    if endpoint.required == "prompt" and not isinstance(need, (str, list)):
        return _invalid(400, "'prompt' is required", "missing_prompt", "prompt")
    return body
