"""In-process mode (`APP_CHECKPOINT`) in headless Chromium: after a window of fog images the drift view shows the
estimated accuracy and the window's explanation, the same as a real server's `GET /drift` says."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import requests
from backend import DriftState
from display import explanation_text
from PIL import Image

from app import create_backend, parse_config
from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.data import read_image
from tests.app.conftest import launched
from tests.app.test_browser import BROWSER_ARGS, CHROMIUM, sync_api
from tests.conftest import import_or_fail
from tests.serve._server import ServeProcess

pytestmark = pytest.mark.slow


def _fog_files(checkpoint: Path, sample_root: Path, folder: Path, n: int = 20) -> list[Path]:
    """`n` real val images after the eval transform and ImageNet-C fog (severity 5), saved as PNG files."""
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    from imagenette_drift.corruptions import CorruptionTransform

    model = load_for_inference(checkpoint)
    fog = CorruptionTransform("fog", 5)
    paths = sorted((sample_root / "val").rglob("*.JPEG"))
    random.Random(0).shuffle(paths)
    folder.mkdir()
    files = []
    for i, path in enumerate(paths[:n]):
        image = fog(model.transform(read_image(path))).permute(1, 2, 0).numpy().astype(np.uint8)
        files.append(folder / f"fog-{i:02d}.png")
        Image.fromarray(image).save(files[-1])
    return files


def test_in_process_drift_view_shows_accuracy_and_explanation_like_the_rest_api(
    reference_80_checkpoint: Path, sample_root: Path, tmp_path: Path
) -> None:
    fog = _fog_files(reference_80_checkpoint, sample_root, tmp_path / "fog")
    backend = create_backend(parse_config([], {"APP_CHECKPOINT": str(reference_80_checkpoint)}))
    with launched(backend) as url, sync_api.sync_playwright() as p:
        for path in fog:  # a window of fog images through the app's own backend
            backend.predict(path)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            badge = page.locator("#drift-badge .badge")
            sync_api.expect(badge).to_have_attribute("data-state", "drifting")  # fetched by the page's load
            shown = badge.inner_text()
            items = page.locator("#drift-badge .explanation li").all_inner_texts()
            page.screenshot(path=tmp_path / "app.png", full_page=True)
        finally:
            browser.close()
    local = backend.drift()
    assert local.drifting and local.images_seen == len(fog) and local.explanation is not None
    assert local.estimate_method == "cot_ls"
    estimate = local.accuracy["cot_ls"]
    assert f"estimated accuracy {estimate.estimate:.0%} (held-out {local.heldout_accuracy:.0%})" in shown
    assert items == explanation_text(local.explanation) and items[0].startswith("Looks like: ")
    assert "fog" in [m.corruption for m in local.explanation.signatures]

    # The same images through a real server: its `/drift` carries the same estimates and explanation.
    with ServeProcess(reference_80_checkpoint, tmp_path / "server.log", "--runtime", "torch") as server:
        for path in fog:
            with open(path, "rb") as f:
                answer = requests.post(f"{server.url}/predict", files={"file": (path.name, f)}, timeout=30)
            assert answer.status_code == 200, answer.text
        remote = DriftState.model_validate(
            requests.get(f"{server.url}/drift", params={"wait_s": 30}, timeout=40).json()
        )
    assert remote.drifting and remote.explanation is not None
    for method, e in local.accuracy.items():
        assert remote.accuracy[method].estimate == pytest.approx(e.estimate, abs=1e-3)
    assert remote.harm == local.harm
    assert remote.explanation.moved_classes == local.explanation.moved_classes
    assert [m.corruption for m in remote.explanation.signatures] == [
        m.corruption for m in local.explanation.signatures
    ]
    for r, mine in zip(remote.explanation.classes, local.explanation.classes, strict=True):
        assert (r.label, r.share) == (mine.label, mine.share)
        assert r.bbse_share == pytest.approx(mine.bbse_share, abs=1e-4)
