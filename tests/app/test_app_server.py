"""`python app/app.py` in API mode against a real `imagenette serve`, driven through gradio_client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from backend import DriftState
from display import drift_badge
from gradio_client import Client, handle_file

from app import EXAMPLES_DIR

pytestmark = pytest.mark.slow  # trains the session checkpoint and starts the server and the app

IMAGES = [EXAMPLES_DIR / "church.jpg", EXAMPLES_DIR / "tench-gaussian_noise-5.jpg"]


def server_answer(api_url: str, image: Path) -> dict:
    with open(image, "rb") as f:
        response = requests.post(
            f"{api_url}/predict", files={"file": (image.name, f, "image/jpeg")}, timeout=60
        )
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.stem)
def test_the_app_shows_the_servers_own_answer_and_drift_status(
    app_url: str, api_url: str, image: Path
) -> None:
    label, latency, badge, message, familiarity = Client(app_url, verbose=False).predict(
        handle_file(str(image)), api_name="/classify"
    )
    assert badge == drift_badge(
        DriftState.model_validate(requests.get(f"{api_url}/drift", timeout=10).json())
    )
    expected = server_answer(api_url, image)
    assert label["label"] == expected["label"]
    shown = [(c["label"], c["confidence"]) for c in label["confidences"]]
    assert shown == [(c["label"], pytest.approx(c["probability"], abs=1e-6)) for c in expected["top_k"]]
    assert re.fullmatch(r"Latency: \d+ ms round trip( \(\d+\.\d ms in the model\))?", latency)
    assert message == ""
    shown_familiarity = expected["familiarity"]
    assert f"k-NN distance {shown_familiarity['knn_distance']:.3f}" in familiarity
    assert familiarity.startswith("**Unfamiliar" if shown_familiarity["unfamiliar"] else "Familiar image")


def test_simulating_drift_sends_a_window_of_corrupted_images(app_url: str, api_url: str) -> None:
    before = DriftState.model_validate(requests.get(f"{api_url}/drift", timeout=10).json())
    badge, message = Client(app_url, verbose=False).predict(api_name="/simulate_drift")
    state = DriftState.model_validate(
        requests.get(f"{api_url}/drift", params={"wait_s": 30}, timeout=40).json()
    )
    assert message == f"Sent {before.window_size} corrupted example images, a full drift window."
    assert state.images_seen == before.images_seen + before.window_size
    assert state.window_filled and badge == drift_badge(state)
    assert re.search(r'data-state="(ok|drifting)">.*statistic [\d.e+-]+ (&lt;=|&gt;) threshold', badge)
