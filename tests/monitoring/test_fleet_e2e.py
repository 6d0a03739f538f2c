"""End to end: three real `imagenette serve --log` replicas, feedback posted to other replicas, then the monitor."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image
from torchvision.transforms import v2

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.cli import cli_main
from imagenette_drift.data import read_image
from imagenette_drift.monitoring.status import MonitorStatus
from tests.serve._server import ServeProcess

pytestmark = pytest.mark.slow
TOKEN = "fleet-feedback-token"


def _png(tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tensor.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def _uploads(model: InferenceModel, paths: list[Path], corruption: str | None) -> list[bytes]:
    """The val images at the model's input size (lossless PNG), gaussian-noised at severity 5 if asked."""
    transform = model.transform
    if corruption is not None:
        from imagenette_drift.corruptions import CorruptionTransform

        transform = v2.Compose([transform, CorruptionTransform(corruption, 5)])
    return [_png(transform(read_image(p))) for p in paths]


def test_three_replicas_then_the_monitor_flags_the_corrupted_hour_and_accuracy_is_exact(
    model: InferenceModel, val_paths: list[Path], trained_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("corrupt_tta")
    log = tmp_path / "inference-log"
    flags = ["--log", str(log), "--log_flush_records", "5", "--log_flush_seconds", "600"]
    replicas = [
        ServeProcess(
            trained_checkpoint,
            tmp_path / f"replica{i}.log",
            *flags,
            "--cache_dir",
            str(tmp_path / f"cache{i}"),
            env={"IMAGENETTE_FEEDBACK_TOKEN": TOKEN, "IMAGENETTE_REPLICA_ID": f"replica-{i}"},
        )
        for i in range(3)
    ]
    truth = [p.parent.name for p in val_paths]
    answers: dict[str, dict] = {}
    for replica in replicas:
        replica.start()
    try:
        for replica in replicas:
            replica.wait_healthy(timeout=240)
        for stream in (_uploads(model, val_paths, None), _uploads(model, val_paths, "gaussian_noise")):
            # clean traffic first, then the corrupted stream, spread over the three replicas
            def send(i: int, stream: list[bytes] = stream) -> tuple[int, dict]:
                reply = requests.post(
                    f"{replicas[i % 3].url}/predict",
                    files={"file": ("x.png", stream[i], "image/png")},
                    timeout=120,
                )
                assert reply.status_code == 200, reply.text
                return i, reply.json()

            with ThreadPoolExecutor(3) as pool:
                results = list(pool.map(send, range(len(stream))))
            if not answers:
                clean = dict(results)
            answers |= {body["request_id"]: body for _, body in results}
        # Labels for the clean stream, each posted to a replica that did not serve it.
        for i, body in clean.items():
            reply = requests.post(
                f"{replicas[(i + 1) % 3].url}/feedback",
                json={"request_id": body["request_id"], "label": truth[i]},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            assert reply.status_code < 300, reply.text
    finally:
        for replica in replicas:
            replica.stop()  # SIGTERM: each flushes what it holds

    out = tmp_path / "out"
    cli_main(["monitor", f"--log={log}", f"--ckpt_path={trained_checkpoint}", f"--out={out}", "--window=20"])
    status = MonitorStatus.model_validate_json((out / "monitor_report.json").read_text())
    printed = capsys.readouterr().out
    with capsys.disabled():  # what the monitor printed for the three-replica run
        print(printed)
    assert [w.n for w in status.windows] == [20, 20, 20, 20] and status.files_skipped == {}
    assert all(w.n_replicas == 3 for w in status.windows)
    assert status.windows[2].drift and status.windows[3].drift

    # Realized accuracy: exactly the share of labelled answers that were right, window by window.
    records = pq.read_table(sorted(log.rglob("predictions/**/*.parquet"))).sort_by(
        [("timestamp", "ascending"), ("request_id", "ascending")]
    )
    label_of = {body["request_id"]: truth[i] for i, body in clean.items()}
    for w, window in enumerate(status.windows):
        ids = records["request_id"].to_pylist()[20 * w : 20 * (w + 1)]
        labelled = [rid for rid in ids if rid in label_of]
        assert window.n_labelled == len(labelled)
        if labelled:
            right = sum(answers[rid]["wnid"] == label_of[rid] for rid in labelled)
            assert window.realized_accuracy == right / len(labelled)
    assert sum(w.n_labelled for w in status.windows) == 40
