"""ASGI middlewares of the API server: reject bad /predict bodies early (413/415/400), and count requests."""

from __future__ import annotations

import json
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagenette_drift.serve.metrics import ServerMetrics

ACCEPTED_TYPES = ("application/json", "multipart/form-data")
CLIENT_CLOSED = 499  # nginx's code for "client closed the connection before the response"


class PredictGuard:
    """Check a POST body before LitServe parses it: content type (415), size (413), JSON syntax (400).

    LitServe would answer all three with a 500 (or buffer any size), so the body is read here, bounded by
    `max_bytes`, and replayed to the app. A client that disconnects mid-upload gets no response and costs
    nothing downstream.
    """

    def __init__(self, app: ASGIApp, path: str = "/predict", max_bytes: int = 10_000_000) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_TYPES:
            shown = content_type or "none"
            await _reject(
                scope,
                receive,
                send,
                415,
                f"unsupported media type {shown!r}; send "
                "multipart/form-data with a 'file' field or application/json with a base64 'image'.",
            )
            return
        if self._too_large(headers.get("content-length")):
            await _reject(scope, receive, send, 413, self._too_large_detail())
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-upload: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _reject(scope, receive, send, 413, self._too_large_detail())
                return
            if not message.get("more_body", False):
                break
        problem = await _syntax_problem(scope, content_type, bytes(body))
        if problem is not None:
            await _reject(scope, receive, send, 400, problem)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _too_large(self, content_length: str | None) -> bool:
        try:
            return content_length is not None and int(content_length) > self.max_bytes
        except ValueError:
            return False  # a malformed header: the server's HTTP parser has already vetted it

    def _too_large_detail(self) -> str:
        return f"the request body is over the limit of {self.max_bytes:,} bytes (--max-bytes); send a smaller image."


async def _syntax_problem(scope: Scope, content_type: str, body: bytes) -> str | None:
    """Why the body does not parse as its content type (LitServe would answer 500), or None."""
    if content_type == "application/json":
        try:
            json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"the body is not valid JSON: {e}."
        return None
    request = Request(scope, _replay(body, _no_more_messages))
    try:
        form = await request.form()
        await form.close()
    except (HTTPException, MultiPartException) as e:
        detail = str(getattr(e, "detail", None) or e).rstrip(".")
        return f"the body is not valid multipart/form-data: {detail}."
    return None


async def _no_more_messages() -> Message:
    return {"type": "http.disconnect"}


async def _reject(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the buffered body once, then defers to the real one (disconnect events)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class MetricsMiddleware:
    """Record every HTTP request's route, status and duration."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: tuple[str, ...]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = CLIENT_CLOSED

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = 500 if status == CLIENT_CLOSED else status  # the outer error middleware answers 500
            raise
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)
