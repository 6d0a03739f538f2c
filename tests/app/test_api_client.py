"""The app's REST client against real HTTP servers on loopback: answers, errors, timeouts and the retry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from api_client import ApiClient
from backend import BackendError, DriftState, Prediction

from tests.app.conftest import Reply

IMAGE = Path(__file__).resolve().parents[2] / "app" / "examples" / "church.jpg"
TOP_K = [
    {"label": "church", "wnid": "n03028079", "probability": 0.61},
    {"label": "parachute", "wnid": "n03888257", "probability": 0.2},
    {"label": "tench", "wnid": "n01440764", "probability": 0.1},
    {"label": "golf ball", "wnid": "n03445777", "probability": 0.05},
    {"label": "gas pump", "wnid": "n03425413", "probability": 0.04},
]
PREDICT = {"label": "church", "wnid": "n03028079", "confidence": 0.61, "top_k": TOP_K}
DRIFT = {
    "enabled": True,
    "images_seen": 250,
    "window_size": 200,
    "window_filled": True,
    "statistic": 0.0123,
    "threshold": 0.0045,
    "drifting": True,
    "drifting_since": 240,
}


def test_a_prediction_is_read_from_the_servers_answer(scripted_api) -> None:
    api = scripted_api(Reply(200, PREDICT))
    prediction = ApiClient(api.url).predict(IMAGE)
    assert api.requests == ["/predict"]
    assert prediction.label == "church" and prediction.confidence == 0.61
    assert prediction.model_ms is None  # the server reports no model time: the app shows the round trip
    assert prediction.top_k == tuple((c["label"], c["probability"]) for c in TOP_K)
    assert prediction.round_trip_ms > 0


def test_the_drift_status_is_read_from_the_servers_answer(scripted_api) -> None:
    api = scripted_api(Reply(200, DRIFT))
    assert ApiClient(api.url).drift() == DriftState.model_validate(DRIFT)
    assert api.requests == ["/drift"]


def test_a_server_that_is_not_running_gets_a_message_saying_how_to_start_it(dead_url: str) -> None:
    client = ApiClient(dead_url, retry_wait=0.0)
    with pytest.raises(
        BackendError,
        match=r"Cannot reach the model API: no connection to the server \(2 attempts\).*make serve",
    ):
        client.predict(IMAGE)


def test_a_hanging_server_times_out_and_is_tried_once_more(scripted_api) -> None:
    api = scripted_api(Reply(200, PREDICT, delay=120.0))
    client = ApiClient(api.url, timeout=0.3, retry_wait=0.0)
    start = time.monotonic()
    with pytest.raises(
        BackendError, match=r"not answering: /predict got no answer within 0.3 s \(2 attempts\)"
    ):
        client.predict(IMAGE)
    assert api.requests == ["/predict", "/predict"]
    assert time.monotonic() - start < 60.0  # about 0.6 s; 120 s had the client waited for the answer


@pytest.mark.parametrize(
    "first",
    [Reply(200, PREDICT, delay=10.0), Reply(503, {"detail": "model is loading"})],
    ids=["timeout", "503"],
)
def test_a_cold_start_is_bridged_by_the_retry(scripted_api, first: Reply) -> None:
    api = scripted_api(first, Reply(200, PREDICT))
    prediction = ApiClient(api.url, timeout=0.5, retry_wait=0.0).predict(IMAGE)
    assert isinstance(prediction, Prediction) and prediction.label == "church"
    assert len(api.requests) == 2


@pytest.mark.parametrize(
    ("reply", "message", "attempts"),
    [
        (
            Reply(400, {"detail": "the file is not an image"}),
            r"refused the image: the file is not an image \(HTTP 400\)",
            1,
        ),
        (
            Reply(413, {"detail": "image larger than 8 MB"}),
            r"refused the image: image larger than 8 MB \(HTTP 413\)",
            1,
        ),
        (
            Reply(500, {"detail": "Internal error, logged"}),
            r"The model API failed: Internal error, logged \(HTTP 500 on /predict\)",
            1,
        ),
        (Reply(503, {"detail": "still loading"}), r"The model API failed: still loading \(HTTP 503", 2),
        (
            Reply(502, "<html><body><h1>Bad Gateway</h1></body></html>"),
            r"The model API failed: Bad Gateway \(HTTP 502",
            2,
        ),
        (
            Reply(404, {"detail": "Not Found"}),
            r"Not an imagenette-drift server: /predict answered 404 .*Check API_URL",
            1,
        ),
        (Reply(200, "<html>a login page</html>"), r"Unexpected answer .*non-JSON", 1),
        (
            Reply(200, {"label": "church"}),
            r"Unexpected answer .*missing or bad 'wnid', 'confidence', 'top_k'",
            1,
        ),
    ],
    ids=["400", "413", "500", "503", "502-html", "404", "not-json", "incomplete"],
)
def test_error_answers_become_messages_with_the_servers_detail(
    scripted_api, reply: Reply, message: str, attempts: int
) -> None:
    api = scripted_api(reply)
    with pytest.raises(BackendError, match=message) as caught:
        ApiClient(api.url, retry_wait=0.0).predict(IMAGE)
    assert "Traceback" not in str(caught.value)
    assert api.url not in str(caught.value)  # on a Space, API_URL is a secret
    assert len(api.requests) == attempts


def test_a_malformed_drift_answer_names_what_is_missing(scripted_api) -> None:
    api = scripted_api(Reply(200, {"enabled": True}))
    with pytest.raises(
        BackendError, match=r"/drift returned .*missing or bad 'images_seen', 'window_size', 'window_filled'"
    ):
        ApiClient(api.url).drift()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"base_url": "127.0.0.1:8000"},
            r"API_URL must be an http:// or https:// URL .* got '127.0.0.1:8000'",
        ),
        ({"base_url": "http://x", "timeout": 0}, "API timeout must be a positive number of seconds, got 0"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiClient(**kwargs)
