"""The app in headless Chromium: upload an image, submit, read the label and the drift badge off the page."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from backend import DriftState
from display import drift_state_name

from app import EXAMPLES_DIR
from tests.conftest import import_or_fail, skip_or_fail

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    skip_or_fail(
        f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)",
        allow_module_level=True,
    )
sync_api = import_or_fail(
    "playwright.sync_api", "playwright is not installed (pip install playwright)", allow_module_level=True
)

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGE = EXAMPLES_DIR / "parachute.jpg"


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def test_upload_submit_and_read_the_label_and_drift_badge(
    page, app_url: str, api_url: str, tmp_path: Path
) -> None:
    page.set_default_timeout(60_000)
    page.goto(app_url)
    badge = page.locator("#drift-badge .badge")
    sync_api.expect(badge).not_to_have_attribute("data-state", "unknown")  # the page's load event fetched it
    seen_before = DriftState.model_validate(requests.get(f"{api_url}/drift", timeout=10).json()).images_seen

    page.locator("#input-image input[type=file]").set_input_files(str(IMAGE))
    sync_api.expect(page.locator("#input-image img")).to_be_visible()
    badge_before = badge.inner_text()
    page.locator("#submit").click()
    shown_label = page.locator("#prediction [data-testid=label-output-value]")
    sync_api.expect(shown_label).not_to_be_empty()
    sync_api.expect(badge).not_to_have_text(badge_before)  # its image count moved on
    page.screenshot(path=tmp_path / "app.png", full_page=True)

    state = DriftState.model_validate(
        requests.get(f"{api_url}/drift", params={"wait_s": 30}, timeout=40).json()
    )
    assert state.images_seen == seen_before + 1
    assert badge.get_attribute("data-state") == drift_state_name(state)
    with open(IMAGE, "rb") as f:
        expected = requests.post(
            f"{api_url}/predict", files={"file": (IMAGE.name, f, "image/jpeg")}, timeout=60
        )
    assert shown_label.inner_text() == expected.json()["label"]
    assert page.locator("#latency").inner_text().startswith("Latency: ")
    assert (tmp_path / "app.png").stat().st_size > 10_000
