"""ASGI middlewares of the API server: check and normalise /predict bodies before LitServe, and count requests."""

from __future__ import annotations

import base64
import json
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagenette_drift.serve.decode import JSON_FIELD, RequestRejected, request_bytes
from imagenette_drift.serve.metrics import ServerMetrics

ACCEPTED_TYPES = ("application/json", "multipart/form-data")
CLIENT_CLOSED = 499  # nginx's code for "client closed the connection before the response"
DRAIN_FACTOR = (
    10  # an oversized body is read and dropped up to this many times --max_bytes, then the socket closes
)


class PredictGuard:
    """Turn every POST body into the one form LitServe parses safely, or answer its 4xx here.

    LitServe parses bodies itself and answers anything unexpected with a 500: a media type in other case
    (`Multipart/Form-Data`, which RFC 9110 makes equal), a malformed body, a missing field. So the body is
    read here, bounded by `max_bytes` (413), its media type matched case-insensitively (415), parsed (400),
    its image bytes taken out (422 for a missing field, 400 for bad base64) and handed on as one canonical
    `application/json` body `{"image": "<base64>"}`, which parses in C and crosses to the worker as a string.

    An oversized body is drained (up to `DRAIN_FACTOR` x `max_bytes`) before the 413, so that the client,
    still sending, is not reset and reads the reason; a client that sent `Expect: 100-continue` (curl) gets
    the 413 before sending anything. A client that disconnects mid-upload gets no response.
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
        media_type = media_type_of(headers.get("content-type", ""))
        if media_type not in ACCEPTED_TYPES:
            shown = media_type or "none"
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
            if "100-continue" not in headers.get("expect", "").lower():
                await _drain(receive, DRAIN_FACTOR * self.max_bytes)
            await _reject(scope, receive, send, 413, self._too_large_detail())
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-upload: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_FACTOR * self.max_bytes - len(body))
                await _reject(scope, receive, send, 413, self._too_large_detail())
                return
            if not message.get("more_body", False):
                break
        try:
            image = await _image_bytes(scope, media_type, bytes(body))
        except RequestRejected as e:
            await _reject(scope, receive, send, e.error.status_code, e.error.detail)
            return
        canonical = json.dumps({JSON_FIELD: base64.b64encode(image).decode("ascii")}).encode()
        await self.app(_as_json(scope, len(canonical)), _replay(canonical, receive), send)

    def _too_large(self, content_length: str | None) -> bool:
        try:
            return content_length is not None and int(content_length) > self.max_bytes
        except ValueError:
            return False  # a malformed header: the server's HTTP parser has already vetted it

    def _too_large_detail(self) -> str:
        return f"the request body is over the limit of {self.max_bytes:,} bytes (--max_bytes); send a smaller image."


def media_type_of(content_type: str) -> str:
    """The media type of a Content-Type header, lower case without parameters (RFC 9110: case-insensitive)."""
    return content_type.split(";", 1)[0].strip().lower()


async def _image_bytes(scope: Scope, media_type: str, body: bytes) -> bytes:
    """The image bytes in a body of an accepted media type; raises `RequestRejected` saying what is wrong."""
    if media_type == "application/json":
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestRejected(400, f"the body is not valid JSON: {e}.") from e
        return request_bytes(payload)
    request = Request(scope, _replay(body, _no_more_messages))
    try:
        form = await request.form()
    except (HTTPException, MultiPartException, UnicodeDecodeError) as e:
        detail = str(getattr(e, "detail", None) or e).rstrip(".")
        raise RequestRejected(400, f"the body is not valid multipart/form-data: {detail}.") from e
    try:
        return request_bytes(form)
    finally:
        await form.close()


def _as_json(scope: Scope, length: int) -> Scope:
    """`scope` with its body declared as `application/json` of `length` bytes."""
    kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
    headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": headers}


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop the rest of a request body, up to `limit` bytes, so the client can read our answer."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


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
