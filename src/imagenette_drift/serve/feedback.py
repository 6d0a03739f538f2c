"""`POST /feedback {"request_id", "label"}`: a ground-truth label for a served request, behind a bearer token.

Labels will drive retraining, so none is accepted anonymously: without a configured token the endpoint answers
404 (off); without an `Authorization: Bearer` header 401; with a wrong token 403. An accepted label is queued as
a label record of the inference log (202); the monitor joins it to the prediction on `request_id`, whichever
replica served it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from imagenette_drift.card import ModelCard
from imagenette_drift.inference_log.writer import InferenceLogWriter
from imagenette_drift.serve.request_log import valid_request_id

MAX_BODY_BYTES = 4096
TOKEN_ENV = "IMAGENETTE_FEEDBACK_TOKEN"


def feedback_endpoint(
    card: ModelCard, writer: InferenceLogWriter | None, token: str | None
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """The route's handler; `writer` None or `token` None/empty turns the endpoint off (404 with the reason)."""
    labels = {wnid: wnid for wnid in card.wnids}
    labels.update({name.lower(): wnid for name, wnid in zip(card.class_names, card.wnids, strict=True)})
    expected = token.encode() if token else None

    async def feedback(request: Request) -> JSONResponse:
        if expected is None or writer is None:
            why = "no feedback token is configured" if expected is None else "the server has no --log"
            return _error(
                404,
                f"POST /feedback is off: {why}. Start the server with --log and the token in ${TOKEN_ENV} "
                "(or --feedback_token).",
            )
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not supplied.strip():
            return _error(
                401,
                "POST /feedback needs an 'Authorization: Bearer <token>' header.",
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(supplied.strip().encode(), expected):
            return _error(403, "the bearer token is not the one this server accepts for /feedback.")
        body = await _read_body(request)
        if body is None:
            return _error(413, f"the body is over {MAX_BODY_BYTES} bytes; send one small JSON object.")
        try:
            data: Any = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return _error(400, f"the body is not valid JSON: {e}.")
        if not isinstance(data, dict) or not {"request_id", "label"} <= data.keys():
            return _error(
                400, 'send a JSON object {"request_id": "<id from /predict>", "label": "<wnid or class>"}.'
            )
        request_id, label = data["request_id"], data["label"]
        if not valid_request_id(request_id):
            return _error(
                400, f"request_id {str(request_id)[:64]!r} is not a request id returned by /predict."
            )
        if not isinstance(label, str):
            return _error(400, f"label must be a string (a wnid or class name), got {type(label).__name__}.")
        wnid = labels.get(label) or labels.get(label.strip().lower())
        if wnid is None:
            choices = ", ".join(f"{w} ({n})" for w, n in zip(card.wnids, card.class_names, strict=True))
            return _error(422, f"label {label[:64]!r} is not a class of this model; use one of: {choices}.")
        if not writer.submit_label(request_id, wnid, dt.datetime.now(dt.UTC)):
            return _error(
                503, "the inference log is not accepting records right now; retry.", {"Retry-After": "1"}
            )
        return JSONResponse(
            {"request_id": request_id, "label_wnid": wnid, "status": "accepted"}, status_code=202
        )

    return feedback


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY_BYTES (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
