"""Fixtures for the monitor: the session's trained model and its REAL outputs on the sample's val images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from tests.monitoring._logs import Outputs, model_outputs


@pytest.fixture(scope="session")
def model(trained_checkpoint: Path) -> InferenceModel:
    torch.set_num_threads(1)
    return load_for_inference(trained_checkpoint)


@pytest.fixture(scope="session")
def val_paths(sample_root: Path) -> list[Path]:
    return sorted((sample_root / "val").rglob("*.JPEG"))


@pytest.fixture(scope="session")
def clean_outputs(model: InferenceModel, val_paths: list[Path]) -> Outputs:
    """The model's embeddings, softmax outputs and input statistics on the 40 real val images."""
    return model_outputs(model, val_paths)


@pytest.fixture(scope="session")
def noisy_outputs(model: InferenceModel, val_paths: list[Path]) -> Outputs:
    """The same images under ImageNet-C gaussian noise, severity 5."""
    pytest.importorskip("corrupt_tta")
    return model_outputs(model, val_paths, "gaussian_noise", 5)


@pytest.fixture(scope="session")
def full_checkpoint(
    trained_checkpoint: Path, model: InferenceModel, full_root: Path, sample_root: Path, tmp_path_factory
) -> Path:
    """The session's checkpoint with its drift reference refitted, as the DriftCallback fits it, on 800 real
    full-data train images the model never saw: windows of 60 run the label-shift test too, which needs 800
    to be calibrated (benchmarks/results/reference_size.md)."""
    from imagenette_drift.card import CHECKPOINT_KEY
    from imagenette_drift.drift.reference import DriftReference, ReferenceSettings

    seen = {p.name for p in (sample_root / "train").rglob("*.JPEG")}
    pool = sorted(p for p in (full_root / "train").rglob("*.JPEG") if p.name not in seen)
    picks = [pool[i] for i in np.random.default_rng(0).choice(len(pool), 800, replace=False)]
    outputs = model_outputs(model, picks)
    reference = DriftReference.fit(
        outputs.embeddings, outputs.probs, outputs.stats, settings=ReferenceSettings(window_size=60, seed=0)
    )
    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    checkpoint[CHECKPOINT_KEY]["drift"] = reference.state_dict()
    path = tmp_path_factory.mktemp("full-reference") / "model.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def full_val_paths(full_root: Path) -> list[Path]:
    """120 real official-val images (seeded), the fleet's traffic in the full-data tests."""
    pool = sorted((full_root / "val").rglob("*.JPEG"))
    return [pool[i] for i in np.random.default_rng(1).choice(len(pool), 120, replace=False)]
