"""Request ids and inference-log records on the API-server side of `/predict`.

`RequestIdMiddleware` gives every `/predict` request an id (a sane client `X-Request-ID`, else a UUID4; 400 for
an id that is not sane), returns it as `X-Request-ID` on every answer, and puts a `RequestContext` in the ASGI
scope. The worker's 200 answer is a `PredictionResponse` that travels back from the inference worker with the
record's payload; when the API process sends it, it adds the request id to the JSON and hands the completed
record to the log writer first, so every 200 the client sees has its record queued before the answer left.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagenette_drift.inference_log.writer import InferenceLogWriter, PredictionPayload

REQUEST_ID_HEADER = "x-request-id"
SCOPE_KEY = "imagenette.request"
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def valid_request_id(value: Any) -> bool:
    """True for 1-128 characters of letters, digits and `._:-`, starting with a letter or digit (a UUID fits)."""
    return isinstance(value, str) and _SANE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class RequestContext:
    """What the API process knows about a /predict request when its answer comes back."""

    request_id: str
    timestamp: dt.datetime  # UTC, when the request arrived
    started: float  # time.perf_counter() then
    writer: InferenceLogWriter | None


class RequestIdMiddleware:
    """Assign, check and return `X-Request-ID` on `path`; start the log writer in this process (see module)."""

    def __init__(
        self, app: ASGIApp, path: str = "/predict", writer: InferenceLogWriter | None = None
    ) -> None:
        self.app = app
        self.path = path
        self.writer = writer
        self._pid: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        self._ensure_started()
        supplied = Headers(scope=scope).get(REQUEST_ID_HEADER)
        if supplied is not None and not valid_request_id(supplied):
            detail = (
                f"X-Request-ID {supplied[:64]!r} is not a valid request id: use 1-128 letters, digits or '._:-' "
                "(a UUID works), or leave the header out to get one."
            )
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        request_id = supplied or str(uuid.uuid4())
        scope[SCOPE_KEY] = RequestContext(
            request_id, dt.datetime.now(dt.UTC), time.perf_counter(), self.writer
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)

    def _ensure_started(self) -> None:
        """Once per process: start the writer, and make SIGTERM flush it at once (see `drain_on_sigterm`)."""
        if self.writer is None or self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.writer.start()
        drain_on_sigterm(self.writer)


def drain_on_sigterm(writer: InferenceLogWriter) -> None:
    """Chain `writer.drain()` before the current SIGTERM handler (uvicorn's graceful shutdown, once serving).

    Shutdown then publishes buffered records immediately, and each record of a request still in flight as soon
    as it completes, instead of waiting for the flush timer; the final `close` happens when uvicorn re-raises
    the signal after its graceful shutdown (`imagenette serve`'s handler). Only the main thread may set
    handlers: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        writer.drain()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


class PredictionResponse(JSONResponse):
    """The 200 answer of /predict, built in the inference worker (so it must stay picklable).

    Sent by the API process, it adds `request_id` to the JSON and, when a log writer is configured and the
    worker attached a payload, queues the record (never blocking, never failing the answer).
    """

    def __init__(self, content: dict[str, Any], payload: PredictionPayload | None = None) -> None:
        super().__init__(content)
        self.content = content
        self.payload = payload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context: RequestContext | None = scope.get(SCOPE_KEY)
        if context is not None:
            self.body = self.render({**self.content, "request_id": context.request_id})
            self.init_headers()
            if context.writer is not None and self.payload is not None:
                latency_ms = (time.perf_counter() - context.started) * 1e3
                context.writer.submit_prediction(
                    self.payload, context.request_id, context.timestamp, latency_ms
                )
        await super().__call__(scope, receive, send)
