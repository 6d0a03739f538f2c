"""The Gradio app through gradio_client when the API is down, slow or failing, and its settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from api_client import ApiClient
from gradio_client import Client, handle_file
from PIL import Image

from app import EXAMPLES_DIR, AppConfig, list_examples, parse_config
from tests.app.conftest import APP_DIR, SUBPROCESS_ENV, Reply, launched

IMAGE = EXAMPLES_DIR / "church.jpg"


def classify(url: str, image: Path | None = IMAGE) -> tuple:
    """(label, latency, badge, message, familiarity) as a client of the page sees them."""
    client = Client(url, verbose=False)
    return client.predict(None if image is None else handle_file(str(image)), api_name="/classify")


@pytest.mark.slow  # serves the app
def test_an_unreachable_api_gets_a_friendly_message_not_a_traceback(dead_url: str) -> None:
    with launched(ApiClient(dead_url, timeout=2.0, retry_wait=0.0)) as url:
        label, latency, _, message, familiarity = classify(url)
        badge = Client(url, verbose=False).predict(api_name="/drift")
    assert message.startswith("**Cannot reach the model API.** no connection to the server (2 attempts).")
    assert "make serve" in message and "Traceback" not in message
    assert dead_url not in message and dead_url not in badge  # on a Space, API_URL is a secret
    assert not label and latency == "" and familiarity == ""
    assert 'data-state="unknown">Drift status unavailable<small>Cannot reach the model API' in badge


@pytest.mark.slow  # serves the app
def test_an_error_answer_shows_the_servers_detail(scripted_api) -> None:
    api = scripted_api(Reply(400, {"detail": "the file is not an image in a format Pillow can read."}))
    with launched(ApiClient(api.url, retry_wait=0.0)) as url:
        label, _, _, message, _ = classify(url)
    assert message == (
        "**The model API refused the image.** the file is not an image in a format Pillow can read. (HTTP 400)"
    )
    assert not label


@pytest.mark.slow  # serves the app
def test_a_server_error_and_a_hanging_server_are_explained(scripted_api) -> None:
    failing = scripted_api(Reply(500, "Internal Server Error"))
    with launched(ApiClient(failing.url, retry_wait=0.0)) as url:
        message = classify(url)[3]
    assert message.startswith("**The model API failed.** Internal Server Error (HTTP 500 on /predict)")
    hanging = scripted_api(Reply(200, {}, delay=10.0))
    with launched(ApiClient(hanging.url, timeout=0.3, retry_wait=0.0)) as url:
        message = classify(url)[3]
    assert "**The model API is not answering.**" in message and "within 0.3 s (2 attempts)" in message
    assert hanging.requests == ["/predict", "/predict"]


@pytest.mark.slow  # serves the app
def test_submitting_without_an_image_asks_for_one(dead_url: str) -> None:
    with launched(ApiClient(dead_url)) as url:
        assert classify(url, image=None)[3] == "Upload, paste or drag an image first, or pick an example."


def test_settings_come_from_the_environment_and_flags_override_them() -> None:
    environ = {"API_URL": "https://api.example.run.app", "API_TIMEOUT": "90", "PORT": "8080"}
    assert parse_config([], environ) == AppConfig("https://api.example.run.app", None, 90.0, None, 8080)
    assert parse_config(["--port", "7000", "--timeout", "5"], environ).port == 7000
    assert parse_config([], {"GRADIO_SERVER_PORT": "7001", "APP_CHECKPOINT": "m.ckpt"}) == AppConfig(
        checkpoint=Path("m.ckpt"), port=7001
    )
    assert parse_config([], {}) == AppConfig("http://127.0.0.1:8000", None, 30.0, None, 7860)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"API_TIMEOUT": "soon"}, "argument --timeout: expected a positive number of seconds, got 'soon'"),
        ({"PORT": "http"}, "argument --port: expected a port number from 1 to 65535, got 'http'"),
    ],
)
def test_a_bad_setting_stops_with_its_name(environ: dict, message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_config([], environ)
    assert message in capsys.readouterr().err


def test_api_mode_does_not_import_torch() -> None:
    code = (
        "import sys, app\n"
        "app.build_demo(app.create_backend(app.parse_config([])))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'imagenette_drift')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=APP_DIR,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    # Only the REST contract (pydantic models, shipped beside the app on a Space) and the package's light
    # top level: no torch, no model code.
    assert out.stdout.strip() == str(
        [
            "imagenette_drift",
            "imagenette_drift.classes",
            "imagenette_drift.monitor_contract",
            "imagenette_drift.serve_contract",
        ]
    )


def test_examples_are_real_images_then_their_corrupted_copies() -> None:
    rows, captions = list_examples()
    assert captions[:4] == ["church", "english springer", "parachute", "tench"]
    assert "tench + gaussian noise 5" in captions and len(rows) == 12
    for (path,) in rows:
        with Image.open(path) as image:
            assert image.format == "JPEG" and min(image.size) == 160


@pytest.mark.slow
def test_a_missing_checkpoint_stops_the_app_with_a_clear_error(tmp_path: Path) -> None:
    env = {**SUBPROCESS_ENV, "APP_CHECKPOINT": str(tmp_path / "missing.ckpt")}
    out = subprocess.run([sys.executable, str(APP_DIR / "app.py")], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert f"app.py: error: Checkpoint {tmp_path / 'missing.ckpt'} does not exist." in out.stderr
    assert "Traceback" not in out.stderr
