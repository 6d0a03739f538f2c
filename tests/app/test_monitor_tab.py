"""The app's Fleet monitoring tab in headless Chromium, drawn from a real `imagenette monitor --follow`."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
import requests
import torch

from tests.app.conftest import APP_DIR, running
from tests.app.test_browser import BROWSER_ARGS, CHROMIUM
from tests.monitoring._follow import follow_monitor
from tests.serve._server import free_port

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api")

T0 = dt.datetime(2026, 11, 4, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def monitor_url(trained_checkpoint: Path, sample_root: Path, tmp_path_factory):
    """A monitor service over a real two-hour log from three replicas: clean, then gaussian noise."""
    pytest.importorskip("corrupt_tta")
    from imagenette_drift.checkpoint import load_for_inference
    from tests.monitoring._logs import model_outputs, spread_over_replicas

    torch.set_num_threads(1)
    model = load_for_inference(trained_checkpoint)
    paths = sorted((sample_root / "val").rglob("*.JPEG"))
    root = tmp_path_factory.mktemp("monitor-tab")
    log = root / "inference-log"
    step = dt.timedelta(seconds=30)
    spread_over_replicas(log, model, model_outputs(model, paths), T0, step, seed=8)
    noisy = model_outputs(model, paths, "gaussian_noise", 5)
    spread_over_replicas(log, model, noisy, T0 + dt.timedelta(hours=1), step, seed=9)
    with follow_monitor(log, trained_checkpoint, root / "out", "--window=20", every="30s") as url:
        yield url


def test_monitoring_tab_draws_the_windows_and_marks_the_drifting_ones(
    monitor_url: str, tmp_path: Path
) -> None:
    status = requests.get(f"{monitor_url}/status", timeout=10).json()
    drifting = [w["window"] for w in status["windows"] if w["drift"]]
    assert len(status["windows"]) == 4 and {2, 3} <= set(drifting)
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    dead_api = f"http://127.0.0.1:{free_port()}"  # the tab needs no model server
    command = [sys.executable, str(APP_DIR / "app.py")]
    env = {"API_URL": dead_api, "MONITOR_URL": monitor_url, "PORT": str(port), "API_TIMEOUT": "5"}
    with (
        running(command, f"{app_url}/", tmp_path / "app.log", timeout=90, **env),
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(app_url)
            page.get_by_role("tab", name="Fleet monitoring").click()
            page.locator("#load-monitor").click()
            rows = page.locator("#monitor-table tbody tr")
            sync_api.expect(rows).to_have_count(4)
            page.screenshot(path=tmp_path / "monitor-tab.png", full_page=True)
            marked = [
                int(r.get_attribute("data-window")) for r in page.locator("#monitor-table tr.drifting").all()
            ]
            assert marked == drifting
            first = rows.nth(0).locator("td")
            assert first.nth(0).inner_text() == "0" and first.nth(2).inner_text() == "20"
            for window in status["windows"]:  # drifting windows name what they look like
                cells = page.locator(f'#monitor-table tr[data-window="{window["window"]}"] td')
                assert cells.nth(11).inner_text() == (window["top_signature"] or "-")
                assert (window["top_signature"] is not None) == window["drift"]
            alert = page.locator("#monitor-table .alert")
            assert alert.get_attribute("data-alert") == ("active" if status["alert"]["active"] else "clear")
        finally:
            browser.close()
    assert (tmp_path / "monitor-tab.png").stat().st_size > 10_000
