"""Fixtures for the serving tests: a real server subprocess on loopback and the model's own answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.data import read_image
from tests.serve._gcs import StorageEmulator
from tests.serve._server import ServeProcess


@pytest.fixture(scope="session")
def inference_model(trained_checkpoint: Path) -> InferenceModel:
    torch.set_num_threads(1)
    return load_for_inference(trained_checkpoint)


@pytest.fixture(scope="session")
def val_images(sample_root: Path) -> list[Path]:
    """The 40 real validation JPEGs of the shipped sample."""
    return sorted((sample_root / "val").rglob("*.JPEG"))


@pytest.fixture(scope="session")
def expected_probs(inference_model: InferenceModel):
    """In-process probabilities of an image file, the server's expected answer."""

    def probs(path: Path) -> torch.Tensor:
        image = inference_model.transform(read_image(path))
        return inference_model.predict_proba(image[None])[0]

    return probs


@pytest.fixture(scope="session")
def server(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for the HTTP contract tests: dynamic batches of up to 8, a 50 ms batch window.

    Runtime `torch` (fp32), so that its answers equal the LightningModule's within 1e-4 (the default, `auto`,
    may pick bf16: see test_runtime.py).
    """
    root = tmp_path_factory.mktemp("server")
    process = ServeProcess(
        trained_checkpoint,
        root / "server.log",
        "--max_batch_size",
        "8",
        "--batch_timeout",
        "0.05",
        "--max_bytes",
        "2000000",
        "--max_pixels",
        "4000000",
        "--runtime",
        "torch",
        "--cache_dir",
        str(root / "cache"),
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEmulator]:
    emulator = StorageEmulator(tmp_path_factory.mktemp("gcs") / "emulator.log").start()
    yield emulator
    emulator.stop()
