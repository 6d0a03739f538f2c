"""Fixtures of the release tests: a clearly worse real checkpoint, a GCS emulator with a bucket, and real
inference logs written by real servers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_ROOT, fit_once, quickstart_args
from tests.serve._gcs import StorageEmulator

BUCKET = "registry"
PRECONDITION_EMULATOR = Path(__file__).with_name("_emulator_with_preconditions.py")


@pytest.fixture(scope="session")
def worse_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real quickstart fit stopped after one training batch: the same network, barely trained."""
    argv = quickstart_args("fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1")
    return fit_once(tmp_path_factory, "worse", argv) / "outputs" / "quickstart" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def collapsed_checkpoint(full_epoch_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model with its head collapsed onto the class rarest in its held-out split: every image is
    called that class with near-certainty, as a model that broke under a corruption does. The card is the
    trained model's, so its confidence thresholds (ATC) are fooled: confident answers look right."""
    import torch

    from imagenette_drift.card import CHECKPOINT_KEY

    state = torch.load(full_epoch_checkpoint, map_location="cpu", weights_only=True)
    shares = torch.tensor(state[CHECKPOINT_KEY]["estimation"]["class_shares"])
    weight = next(k for k in state["state_dict"] if k.endswith("fc.weight"))
    bias = weight.removesuffix("weight") + "bias"
    state["state_dict"][weight].zero_()
    state["state_dict"][bias].zero_()
    state["state_dict"][bias][int(shares.argmin())] = 20.0
    path = tmp_path_factory.mktemp("collapsed") / "model.ckpt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEmulator]:
    """gcp-storage-emulator honouring `ifGenerationMatch` as GCS does (see _emulator_with_preconditions.py)."""
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    emulator = StorageEmulator(log, launcher=(sys.executable, str(PRECONDITION_EMULATOR))).start()
    emulator.client().create_bucket(BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture
def use_emulator(gcs: StorageEmulator, monkeypatch: pytest.MonkeyPatch) -> StorageEmulator:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    return gcs


# -- a real inference log written by real servers (gate --log, export-labelled) --------------------------------
FEEDBACK_TOKEN = "release-feedback-token"


@dataclass
class ServedLog:
    """A log written by `imagenette serve` and what was sent to it: request id -> (image bytes, posted label)."""

    root: Path
    checkpoint: Path
    sent: dict[str, tuple[bytes, str | None]]
    orphan_labels: int = 0


def _serve_and_send(
    checkpoint: Path, root: Path, images: list[tuple[Path, bool]], *flags: str, orphan: bool = False
) -> ServedLog:
    """Serve `checkpoint` logging to `root`, POST each image (with its true label when marked), stop (flush)."""
    import requests

    from tests.serve._server import ServeProcess

    served = ServedLog(root, checkpoint, {})
    process = ServeProcess(
        checkpoint, root.parent / f"{root.name}-server.log",
        "--log", str(root), "--log_flush_seconds", "0.5", "--runtime", "torch",
        "--cache_dir", str(root.parent / "cache"), *flags,
        env={"IMAGENETTE_FEEDBACK_TOKEN": FEEDBACK_TOKEN},
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    with process:
        for path, labelled in images:
            data = path.read_bytes()
            reply = requests.post(f"{process.url}/predict", files={"file": ("x.jpg", data)}, timeout=60)
            assert reply.status_code == 200, reply.text
            rid = reply.json()["request_id"]
            label = path.parent.name if labelled else None
            if labelled:
                answer = requests.post(
                    f"{process.url}/feedback",
                    json={"request_id": rid, "label": label},
                    headers=auth,
                    timeout=30,
                )
                assert answer.status_code == 202, answer.text
            else:  # a label without the token is refused, so it never reaches the log
                answer = requests.post(
                    f"{process.url}/feedback", json={"request_id": rid, "label": path.parent.name}, timeout=30
                )
                assert answer.status_code == 401, answer.text
            served.sent[rid] = (data, label)
        if orphan:  # a label for a request this log never saw
            answer = requests.post(
                f"{process.url}/feedback",
                json={"request_id": "ghost-1", "label": "tench"},
                headers=auth,
                timeout=30,
            )
            assert answer.status_code == 202
            served.orphan_labels = 1
    return served


@pytest.fixture(scope="session")
def served_log(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ServedLog:
    """The session's model served with --log_images: 5 train images (no label; one tried without the token),
    then the 40 test images, each labelled through /feedback, and one label for an unknown request."""
    root = tmp_path_factory.mktemp("served") / "log"
    train = sorted((SAMPLE_ROOT / "train").rglob("*.JPEG"))[::16][:5]
    test = sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))
    images = [(p, False) for p in train] + [(p, True) for p in test]
    return _serve_and_send(trained_checkpoint, root, images, "--log_images", orphan=True)


@pytest.fixture(scope="session")
def unlabelled_log(full_epoch_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ServedLog:
    """The full-data epoch's model served with --log_images: 20 test images, none labelled."""
    root = tmp_path_factory.mktemp("unlabelled") / "log"
    test = sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))[::2]
    return _serve_and_send(full_epoch_checkpoint, root, [(p, False) for p in test], "--log_images")


@pytest.fixture(scope="session")
def imageless_log(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ServedLog:
    """The session's model served without --log_images: 10 test images, each labelled."""
    root = tmp_path_factory.mktemp("imageless") / "log"
    test = sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))[::4]
    return _serve_and_send(trained_checkpoint, root, [(p, True) for p in test])
