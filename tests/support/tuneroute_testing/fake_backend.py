"""A small OpenAI-compatible HTTP server that says which model it is.

It stands in for vLLM in the router tests and benchmarks (vLLM needs a GPU). It serves
/v1/chat/completions and /v1/completions (plain and SSE streaming, with a tool call when
tools are offered), vLLM's /v1/load_lora_adapter, and two test hooks:
POST /control {"fail_status": 500, "delay_s": 0, "break_stream": false, "api_key": null} and GET /stats.
With an api_key, /v1/ requests without `Authorization: Bearer <api_key>` get vLLM's 401 (--api-key).

    python -m tuneroute_testing.fake_backend --name small --port 9001 [--host ADDRESS]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build(name: str) -> Starlette:
    state: dict[str, Any] = {
        "fail_status": 0,
        "delay_s": 0.0,
        "break_stream": False,
        "requests": 0,
        "models": [],
        "adapters": [],
        "last_body": None,
        "api_key": None,
        "unauthorized": 0,
    }

    def refused(request: Request) -> Response | None:
        """vLLM's answer to a /v1/ request without its --api-key."""
        if state["api_key"] and request.headers.get("authorization") != f"Bearer {state['api_key']}":
            state["unauthorized"] += 1
            return Response(orjson.dumps({"error": "Unauthorized"}), 401, media_type="application/json")
        return None

    def usage(text: str) -> dict:
        return {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())}

    async def counted(request: Request) -> dict | Response:
        """A /v1/ request's JSON body, counted (requests, models); vLLM's 401 instead without its key."""
        if denied := refused(request):
            return denied
        body = orjson.loads(await request.body())
        state["requests"] += 1
        state["models"].append(body.get("model"))
        return body

    def answer(id_: str, object_: str, created: int, model: str | None, choices: list, text: str) -> Response:
        out = {"id": id_, "object": object_, "created": created, "model": model, "choices": choices}
        return Response(orjson.dumps({**out, "usage": usage(text)}), media_type="application/json")

    async def chat(request: Request) -> Response:
        body = await counted(request)
        if isinstance(body, Response):
            return body
        state["last_body"] = body
        if state["fail_status"]:
            return Response(
                orjson.dumps({"error": {"message": f"{name} failing", "type": "server_error"}}),
                state["fail_status"],
                media_type="application/json",
            )
        if state["delay_s"]:
            await asyncio.sleep(state["delay_s"])
        model = body.get("model")
        text = f"I am {name}"
        created = int(time.time())
        tool_call = None
        if body.get("tools"):
            fn = body["tools"][0]["function"]["name"]
            tool_call = {"id": "call_1", "type": "function", "function": {"name": fn, "arguments": '{"city": "Paris"}'}}
        if body.get("stream"):

            async def events():
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created, "model": model}
                for i, word in enumerate(text.split()):
                    delta = {"role": "assistant", "content": word if i == 0 else " " + word}
                    yield (
                        b"data: "
                        + orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                        + b"\n\n"
                    )
                    await asyncio.sleep(0.01)
                    if state["break_stream"]:
                        raise ConnectionAbortedError("backend died mid-stream")  # server drops the connection
                last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield b"data: " + orjson.dumps(last) + b"\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage(text)}) + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text}
        if tool_call:
            message["tool_calls"] = [tool_call]
        choices = [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}]
        return answer("chatcmpl-1", "chat.completion", created, model, choices, text)

    async def completions(request: Request) -> Response:
        body = await counted(request)
        if isinstance(body, Response):
            return body
        text = f"I am {name}"
        choices = [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]
        return answer("cmpl-1", "text_completion", int(time.time()), body.get("model"), choices, text)

    async def load_adapter(request: Request) -> Response:
        if denied := refused(request):
            return denied
        body = orjson.loads(await request.body())
        if body["lora_name"] in [a["lora_name"] for a in state["adapters"]]:
            return Response(b"The lora adapter has already been loaded.", 400)
        state["adapters"].append(body)
        return Response(b"Success: LoRA adapter loaded.")

    async def control(request: Request) -> Response:
        state.update(orjson.loads(await request.body()))
        return Response(b"{}", media_type="application/json")

    async def stats(request: Request) -> Response:
        return Response(orjson.dumps(state), media_type="application/json")

    async def models(request: Request) -> Response:
        return Response(
            orjson.dumps({"object": "list", "data": [{"id": name, "object": "model"}]}), media_type="application/json"
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/load_lora_adapter", load_adapter, methods=["POST"]),
            Route("/v1/models", models),
            Route("/control", control, methods=["POST"]),
            Route("/stats", stats),
            Route("/health", lambda r: Response(b"ok")),
        ]
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (pods reach the real node's host address)"
    )
    a = ap.parse_args()
    import uvicorn

    uvicorn.run(build(a.name), host=a.host, port=a.port, log_level="warning", access_log=False)
