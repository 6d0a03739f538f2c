"""REST client of `imagenette serve`: POST /predict and GET /drift, with a timeout and one retry.

The retry is for a scale-to-zero service (Cloud Run): the first request after idling can hang or answer 503
while an instance starts, and the second one usually lands on the warm instance.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import time
from pathlib import Path
from typing import Any, TypeVar

import requests
from backend import BackendError, DriftState, Prediction
from pydantic import ValidationError

from imagenette_drift.monitor_contract import MonitorStatus
from imagenette_drift.serve_contract import PredictionAnswer

log = logging.getLogger("imagenette_app")

_Answer = TypeVar("_Answer", PredictionAnswer, DriftState, MonitorStatus)
RETRY_STATUSES = frozenset({502, 503, 504})  # a proxy or an instance that is still starting


def _detail(response: requests.Response) -> str:
    """The server's `detail` message, else the start of its body as text."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(re.sub(r"<[^>]*>", " ", response.text).split())  # an HTML error page, as text
        return text[:200] or response.reason or "no message"
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]


def _parse(model: type[_Answer], body: Any, route: str) -> _Answer:
    """Validate a 2xx JSON body against the contract; a malformed one is a `BackendError` naming the problem."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        fields = ", ".join(f"'{'.'.join(map(str, err['loc'])) or 'body'}'" for err in e.errors())
        raise BackendError(
            "Unexpected answer from the model API",
            f"{route} returned {str(body)[:200]!r} (missing or bad {fields}). "
            "Is API_URL pointing at an imagenette-drift server?",
        ) from e


class ApiClient:
    """Talks to `imagenette serve` at `base_url`; every failure becomes a `BackendError` a user can act on.

    Pitfall: a request that times out is sent again once, so the total wait is up to about
    ``2 * timeout + retry_wait`` seconds before the user sees the "did not answer" message.
    """

    def __init__(
        self, base_url: str, timeout: float = 30.0, retries: int = 1, retry_wait: float = 1.0
    ) -> None:
        """Check the settings; nothing is contacted until the first request.

        Args:
            base_url: The server's root, e.g. ``http://127.0.0.1:8000`` (the ``API_URL`` setting).
            timeout: Seconds to wait for each attempt (connect and read) before giving up on it.
            retries: Extra attempts after a timeout, a refused connection or a 502/503/504.
            retry_wait: Seconds to wait before each retry.
        """
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"API_URL must be an http:// or https:// URL such as http://127.0.0.1:8000, got {base_url!r}."
            )
        if timeout <= 0:
            raise ValueError(f"API timeout must be a positive number of seconds, got {timeout!r}.")
        if retries < 0:
            raise ValueError(f"`retries` must be 0 or more, got {retries!r}.")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.retry_wait = float(retry_wait)
        self.description = "REST API of `imagenette serve`"  # not the URL: it may be a secret
        self._session = requests.Session()

    def predict(self, image_path: str | Path) -> Prediction:
        """Send the image file as-is (multipart field ``file``) and return the server's top classes."""
        path = Path(image_path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = path.read_bytes()
        start = time.perf_counter()
        body = self._request("POST", "/predict", files={"file": (path.name, data, content_type)})
        round_trip_ms = (time.perf_counter() - start) * 1000.0
        answer = _parse(PredictionAnswer, body, "/predict")
        # The server reports no model time: the app shows the round trip alone (model_ms stays None).
        return Prediction(
            label=answer.label,
            confidence=answer.confidence,
            top_k=tuple((c.label, c.probability) for c in answer.top_k),
            round_trip_ms=round_trip_ms,
            familiarity=answer.familiarity,
        )

    def drift(self) -> DriftState:
        """The server's online drift monitor state (``GET /drift``)."""
        return _parse(DriftState, self._request("GET", "/drift"), "/drift")

    def monitor_status(self) -> MonitorStatus:
        """The window table and alert of an `imagenette monitor --follow` service (``GET /status``)."""
        return _parse(MonitorStatus, self._request("GET", "/status"), "/status")

    def _request(self, method: str, route: str, **kwargs: Any) -> Any:
        """One call with retries; returns the decoded JSON body of a 2xx answer.

        Messages name the route, not the URL: on a Space, API_URL is a secret the page must not show. The
        log (visible to the operator only) has the URL.
        """
        url = f"{self.base_url}{route}"
        last: requests.Response | requests.RequestException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait)
            try:
                last = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as e:
                log.warning("%s %s, attempt %d: %s", method, url, attempt + 1, e)
                last = e
                continue
            if last.status_code in RETRY_STATUSES:
                log.warning("%s %s, attempt %d: HTTP %d", method, url, attempt + 1, last.status_code)
                continue
            if last.status_code >= 400:
                raise self._http_error(last, route)
            return self._json(last, route)
        if isinstance(last, requests.Response):
            raise self._http_error(last, route)
        raise self._network_error(route, last)

    def _network_error(self, route: str, error: requests.RequestException | None) -> BackendError:
        """A `BackendError` for the last attempt's timeout or refused connection."""
        attempts = self.retries + 1
        if isinstance(error, requests.Timeout):
            failure = BackendError(
                "The model API is not answering",
                f"{route} got no answer within {self.timeout:g} s ({attempts} attempts). A server that scales "
                "to zero (Cloud Run) can take a minute to start: try again shortly.",
            )
        else:
            failure = BackendError(
                "Cannot reach the model API",
                f"no connection to the server ({attempts} attempts). Is it running? Start it with "
                "`make serve`, or set API_URL to its address.",
            )
        failure.__cause__ = error
        return failure

    def _http_error(self, response: requests.Response, route: str) -> BackendError:
        """A `BackendError` for a 4xx/5xx answer, with the server's own explanation."""
        code, detail = response.status_code, _detail(response)
        if code == 404:
            return BackendError(
                "Not an imagenette-drift server",
                f"{route} answered 404 ({detail}). Check API_URL: it should be the server's root URL.",
            )
        if code < 500:
            return BackendError("The model API refused the image", f"{detail} (HTTP {code})")
        return BackendError(
            "The model API failed", f"{detail} (HTTP {code} on {route}). Try again in a moment."
        )

    def _json(self, response: requests.Response, route: str) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise BackendError(
                "Unexpected answer from the model API",
                f"{route} returned non-JSON content ({response.headers.get('content-type')}). "
                "Is API_URL pointing at an imagenette-drift server?",
            ) from e
