"""Embed image files with an inference model: embeddings, softmax outputs and input statistics for drift."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.transforms import v2

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.data.images import read_image
from imagenette_drift.drift.image_stats import image_statistics


def tested_transform(model: InferenceModel, corruption: str | None, severity: int) -> v2.Transform:
    """The eval transform, then the corruption (seeded by each image's pixels): what `embed_folder` applies."""
    if corruption is None:
        return model.transform
    from imagenette_drift.corruptions import CorruptionTransform

    return v2.Compose([model.transform, CorruptionTransform(corruption, severity)])


def embed_folder(
    model: InferenceModel,
    paths: Sequence[Path],
    corruption: str | None = None,
    severity: int = 3,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings, softmax outputs and input statistics of images after the eval transform (then corrupted,
    seeded by each image's pixels, as `--data.corruption` does in training)."""
    transform = tested_transform(model, corruption, severity)
    embeddings, probs, stats = [], [], []
    for start in range(0, len(paths), batch_size):
        batch = [transform(read_image(path)) for path in paths[start : start + batch_size]]
        images = torch.stack(batch)
        emb, prob = model.embed_and_predict(images)
        embeddings.append(emb)
        probs.append(prob)
        stats.append(image_statistics(images))
    return torch.cat(embeddings), torch.cat(probs), torch.cat(stats)
