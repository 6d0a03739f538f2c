"""Shared by the estimation benchmarks: a checkpoint's embeddings, logits and labels on (corrupted) images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.data import read_image
from imagenette_drift.data.layout import Split, scan_split, stratified_holdout


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], transform, corruption: str | None, severity: int) -> None:
        self.paths, self.transform = list(paths), transform
        if corruption is not None:
            from imagenette_drift.corruptions import CorruptionTransform

            self.corrupt = CorruptionTransform(corruption, severity)
        else:
            self.corrupt = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.transform(read_image(self.paths[i]))
        return image if self.corrupt is None else self.corrupt(image)


@torch.inference_mode()
def model_outputs(
    model: InferenceModel,
    paths: Sequence[Path],
    corruption: str | None = None,
    severity: int = 3,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, D), logits (N, C)) of the images after the eval transform and an optional corruption.

    `bf16` runs the network under bfloat16 autocast, as the server's `bf16` runtime does on CPUs with native
    bf16 (`--runtime auto` picks it there); outputs are returned as float32 either way."""
    loader = DataLoader(
        _Images(paths, model.transform, corruption, severity), batch_size=batch_size, num_workers=workers
    )
    embeddings, logits = [], []
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    for images in loader:
        with autocast:
            features, out = model.net.embed_and_logits(images.to(device), model.card.tta_flip)
        embeddings.append(features.float().cpu())
        logits.append(out.float().cpu())
    return torch.cat(embeddings), torch.cat(logits)


def heldout_and_test(root: Path, val_fraction: float = 0.1, split_seed: int = 0) -> tuple[Split, Split]:
    """The held-out split carved from train as `imagenette fit` carves it, and the official val (test) split."""
    _, heldout = stratified_holdout(scan_split(root, "train"), val_fraction, split_seed)
    return heldout, scan_split(root, "val")


def subset(split: Split, limit: int | None, seed: int = 0) -> Split:
    """A seeded random subset of at most `limit` images (all when None)."""
    if limit is None or limit >= len(split):
        return split
    keep = sorted(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
    return Split(tuple(split.paths[i] for i in keep), tuple(split.labels[i] for i in keep))
