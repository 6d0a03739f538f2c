"""Explanations of a real fog stream: `GET /drift` of a real server, then `imagenette monitor` over its log.

The server logs with `--log_images`; the monitor's report shows the fog windows' explanations with thumbnails of
the witness images beside their nearest held-out images.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from imagenette_drift.checkpoint import InferenceModel, read_checkpoint
from imagenette_drift.cli import cli_main
from imagenette_drift.data import read_image
from imagenette_drift.monitoring.status import MonitorStatus
from imagenette_drift.serve_contract import DriftStatus
from tests.conftest import import_or_fail
from tests.serve._server import ServeProcess

pytestmark = pytest.mark.slow
NO_SIGNATURE = "no known signature"
WINDOW = 20  # the refitted reference's window


@pytest.fixture(scope="module")
def checkpoint(reference_80_checkpoint: Path) -> Path:
    return reference_80_checkpoint


def _png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, data: bytes) -> None:
    answer = requests.post(f"{url}/predict", files={"file": ("image.png", data)}, timeout=30)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def fog_stream(
    checkpoint: Path, inference_model: InferenceModel, val_images: list[Path], tmp_path_factory
) -> dict:
    """A real server logging with --log_images: the 40 val images (shuffled), then the same under fog (severity
    5, lossless PNG after the eval transform); `/drift` read after each half."""
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    from imagenette_drift.corruptions import CorruptionTransform

    root = tmp_path_factory.mktemp("fog-stream")
    images = [inference_model.transform(read_image(p)) for p in val_images]
    random.Random(0).shuffle(images)
    fog = CorruptionTransform("fog", 5)
    log = root / "inference-log"
    args = ("--runtime", "torch", "--log", str(log), "--log_images", "--log_flush_records", "10")
    drift = {}
    with ServeProcess(checkpoint, root / "server.log", *args) as server:
        for name, stream in (("clean", images), ("fog", [fog(i) for i in images])):
            for image in stream:
                _post(server.url, _png(image))
            answer = requests.get(f"{server.url}/drift", params={"wait_s": 30}, timeout=40).json()
            drift[name] = DriftStatus.model_validate(answer)
    return {"log": log, "drift": drift, "n": len(images)}


def test_drift_explains_the_fog_window_and_only_a_drifting_one(fog_stream: dict, checkpoint: Path) -> None:
    card = read_checkpoint(checkpoint)["imagenette_drift"]
    assert card["explanation"]["signatures"], "the quickstart checkpoint should carry corruption signatures"
    clean, drift = fog_stream["drift"]["clean"], fog_stream["drift"]["fog"]
    assert (clean.explanation is not None) == clean.drifting
    assert drift.images_seen == 2 * fog_stream["n"] and drift.drifting is True
    assert drift.accuracy is not None and drift.accuracy["atc_mc"].n == WINDOW
    assert isinstance(drift.harm, bool)
    explanation = drift.explanation
    assert explanation is not None
    assert "fog" in [m.corruption for m in explanation.signatures] and len(explanation.signatures) == 3
    assert explanation.looks_like == NO_SIGNATURE or "fog" in explanation.looks_like
    classes = {c.label: c for c in explanation.classes}
    assert list(classes) == list(card["class_names"])
    assert sum(c.share for c in classes.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(c.bbse_share for c in classes.values()) == pytest.approx(1.0, abs=1e-5)
    # Witness images point into the stream's latest window (the fog images), each with its nearest held-out image.
    first = drift.images_seen - WINDOW + 1
    assert explanation.witnesses and all(first <= w.image <= drift.images_seen for w in explanation.witnesses)
    assert all(w.nearest_reference_path.startswith("train/") for w in explanation.witnesses)


def test_monitor_report_explains_the_fog_windows_with_thumbnails(
    fog_stream: dict, checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "monitor"
    cli_main(
        [
            "monitor",
            f"--log={fog_stream['log']}",
            f"--ckpt_path={checkpoint}",
            f"--out={out}",
            f"--window={WINDOW}",
            "--flush",
            f"--reference_root={sample_root}",
            "--threads=1",
        ]
    )
    printed = capsys.readouterr().out
    assert "looks like" in printed
    status = MonitorStatus.model_validate_json((out / "monitor_report.json").read_text())
    windows = status.windows
    assert [w.n for w in windows] == [WINDOW] * 4
    assert [w.drift for w in windows[2:]] == [True, True]  # the fog half
    for w in windows:
        assert (w.explanation is not None) == w.drift  # clean windows are not explained
    markdown = (out / "monitor_report.md").read_text()
    assert "## Why the drifting windows drift" in markdown
    for w in windows[2:]:
        assert "fog" in [m.corruption for m in w.explanation.signatures]
        assert w.top_signature in ("fog", NO_SIGNATURE) or w.top_signature in w.explanation.looks_like
        assert w.top_signature_similarity == w.explanation.signatures[0].similarity
        assert w.bbse_max_change is not None and 0.0 <= w.bbse_max_change <= 1.0
        assert f"### Window {w.window} " in markdown
        witnesses = w.explanation.witnesses
        assert len(witnesses) == 3 and all(x.request_id for x in witnesses)
        for witness in witnesses:
            for thumbnail in (witness.thumbnail, witness.nearest_thumbnail):
                assert thumbnail is not None and f"]({thumbnail})" in markdown
                with Image.open(out / thumbnail) as image:
                    image.verify()
                    assert image.format == "JPEG" and max(image.size) <= 96
