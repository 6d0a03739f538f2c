"""A map-style dataset over image files that yields uint8 RGB tensors and integer labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from imagenette_drift.data.images import read_image
from imagenette_drift.errors import UnreadableImagesError

UNKNOWN_LABEL = -1


class ImageFileDataset(Dataset):
    """Images from a list of files; `labels` may be omitted (predicting on an unlabelled folder).

    Items are `(image, label)` with `image` a uint8 (3, H, W) tensor after `transform`; unlabelled
    items carry `UNKNOWN_LABEL`. A file that cannot be decoded raises an error naming its path.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"Got {len(paths)} paths but {len(labels)} labels; they must match one to one.")
        self.paths = tuple(paths)
        self.labels = tuple(labels) if labels is not None else (UNKNOWN_LABEL,) * len(self.paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def verify_images(paths: Sequence[Path]) -> None:
    """Check that every file opens as an image (header only: fast); raise naming all the bad files."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as e:  # PIL raises many types for a bad header; all mean "not an image".
            bad.append(f"{path} ({type(e).__name__}: {e})")
    if bad:
        listed = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise UnreadableImagesError(
            f"{len(bad)} image file(s) cannot be read:\n  {listed}{more}\nRemove or replace them, then rerun."
        )
