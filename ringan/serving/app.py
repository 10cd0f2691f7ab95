"""The Starlette application: OpenAI-compatible routes, the web chat page, limits and the API key.

Starlette rather than FastAPI: the server has six routes and checks its bodies itself (to answer OpenAI-style
errors naming the parameter, where FastAPI's validation answers 422 in its own shape), so FastAPI would only add
pydantic models and a dependency. uvicorn runs it. Logs never hold message contents: a request is logged by its
token counts, finish reason and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .protocol import ApiError, chat_request, completion_request
from .replies import ReplyText
from .server import Server

log = logging.getLogger("ringan.serve")
OPEN_PATHS = ("/", "/health")  # the page and the probe; the API and the metrics need the key


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


async def read_json(request: Request, limit: int) -> dict:
    """The body as JSON, refused past `limit` bytes before it is all read (413)."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"the request body is larger than {limit} bytes", None, "request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON", None, "invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    return value


def create_app(server: Server):
    """The ASGI application serving `server` (see `docs/serving.md`)."""

    async def respond(request: Request, chat: bool) -> Response:
        body = await read_json(request, server.limits.max_body_bytes)
        if chat:
            parsed = chat_request(body, server.limits, server.name)
            prompt = server.builder.chat(parsed.topic, parsed.context, parsed.turns, parsed.speaker)
            key = server.conversation_key(parsed.conversation_id) if parsed.conversation_id else None
        else:
            parsed = completion_request(body, server.limits, server.name)
            prompt = server.builder.completion(parsed.prompt, parsed.topic, parsed.context)
            key = None
        job = await server.start(request, parsed, prompt, key)
        text = ReplyText(server.tok, chat, parsed.params.stop, job.stop_ids)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        base = {"id": rid, "created": int(time.time()), "model": server.name}
        echo = parsed.prompt if not chat and parsed.echo else ""
        if parsed.params.stream:
            kind = "chat.completion.chunk" if chat else "text_completion"
            return StreamingResponse(
                sse(server, request, job, text, {**base, "object": kind}, chat, echo, parsed.params.include_usage),
                media_type="text/event-stream",
                headers={**server.headers(job), "cache-control": "no-cache"},
            )
        finish = "stop"
        async for _, reason in server.events(request, job, text):
            finish = reason or finish
        content = echo + text.content
        if chat:
            message = {"role": "assistant", "content": content, "name": parsed.speaker}
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            payload = {**base, "object": "chat.completion", "choices": [choice], "usage": server.usage(job)}
        else:
            choice = {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}
            payload = {**base, "object": "text_completion", "choices": [choice], "usage": server.usage(job)}
        return JSONResponse(payload, headers=server.headers(job))

    async def chat_completions(request: Request) -> Response:
        return await respond(request, chat=True)

    async def completions(request: Request) -> Response:
        return await respond(request, chat=False)

    async def models(request: Request) -> Response:
        entry = {"id": server.name, "object": "model", "created": server.created, "owned_by": "ringan"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def health(request: Request) -> Response:
        status = {"status": "ok", "model": server.name, "active": server.engine.active}
        return JSONResponse({**status, "waiting": server.engine.waiting})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    page = (resources.files("ringan.serving") / "static" / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page.replace("{{MODEL}}", server.name))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.loop = asyncio.get_running_loop()
        yield
        server.engine.close()

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(ApiError(exc.status_code, exc.detail or "not found", None, None))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
        return error_response(ApiError(500, "internal server error", None, "internal_error", "server_error"))

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    return Guard(app, server)


class Guard:
    """ASGI middleware: the API key (401 before the body is read) and the request count by route and status.
    Plain ASGI, not `BaseHTTPMiddleware`, so streaming responses and client disconnects pass straight through."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = [0]

        async def counted(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if self.server.api_key and path not in OPEN_PATHS:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {self.server.api_key}".encode()):
                err = ApiError(401, "missing or wrong API key (Authorization: Bearer ...)", None, "invalid_api_key")
                await error_response(err)(scope, receive, counted)
                self._count(path, status[0])
                return
        try:
            await self.app(scope, receive, counted)
        finally:
            self._count(path, status[0] or 499)  # no status sent: the client left first

    def _count(self, path: str, status: int) -> None:
        self.server.metrics.inc(
            "ringan_requests_total", endpoint=path if path in ROUTES else "other", status=str(status)
        )


ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


async def sse(server: Server, request: Request, job, text: ReplyText, base: dict, chat: bool, echo: str, usage: bool):
    """Server-sent events of a streaming reply, ending in `data: [DONE]`."""

    def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            part = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta is not None else {})
            choice = {"index": 0, "delta": part, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice]}, ensure_ascii=False)}\n\n"

    try:
        if chat:
            yield chunk(None, None, first=True)
        elif echo:
            yield chunk(echo, None)
        async for delta, finish in server.events(request, job, text):
            if delta:
                yield chunk(delta, None)
            if finish is not None:
                yield chunk(None, finish)
        if usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': server.usage(job)})}\n\n"
        yield "data: [DONE]\n\n"
    except ApiError as err:  # the stream has begun: the error goes in an event
        yield f"data: {json.dumps(err.body())}\n\n"
