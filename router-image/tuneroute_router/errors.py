"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson
from starlette.responses import Response

JSON = "application/json"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(error_body(message, type_, code, param), status, headers=headers, media_type=JSON)


def unauthorized() -> Response:
    return error_response(401, "missing or invalid API key", "authentication_error", "invalid_api_key")


def model_not_allowed(who: str, model: str, allowed: list[str]) -> Response:
    message = f"API key '{who}' may not use model '{model}'; it may use: {', '.join(allowed) or 'no model'}"
    return error_response(403, message, "permission_error", "model_not_allowed", "model")
