"""Decode a split's JPEGs once into one memory-mapped uint8 file, so epochs after the first never decode."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from imagenette_drift.data.images import read_image_shrunk
from imagenette_drift.io import atomic_path, write_text_atomic


def _cache_key(paths: Sequence[Path], short_side: int) -> str:
    digest = hashlib.sha256(f"v2:{short_side}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class DecodedImageStore:
    """Images decoded to uint8 (3, H, W), short side shrunk to at most `short_side`, in one flat memmap.

    Build it once per split with `DecodedImageStore.build` (it reuses a cache whose key matches the paths,
    sizes and modification times); reading an item is a slice of the memmap, with no decoding. The file is
    opened lazily per process, so DataLoader workers share the page cache instead of copying the data.
    """

    def __init__(self, data_path: Path, offsets: np.ndarray, shapes: np.ndarray) -> None:
        self.data_path = Path(data_path)
        self.offsets = offsets
        self.shapes = shapes
        self._data: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        return int(self.shapes.prod(axis=1).sum())

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._data is None:
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        c, h, w = self.shapes[index]
        start = int(self.offsets[index])
        return torch.from_numpy(np.array(self._data[start : start + c * h * w]).reshape(c, h, w))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}  # workers reopen the memmap themselves

    @classmethod
    def build(cls, paths: Sequence[Path], cache_dir: str | Path, short_side: int = 160) -> DecodedImageStore:
        """Open the cache for `paths`, decoding them first (atomically) when it does not exist yet."""
        cache_dir = Path(cache_dir)
        key = _cache_key(paths, short_side)
        data_path, index_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
        if not (data_path.exists() and index_path.exists()):
            shapes = []
            with atomic_path(data_path) as tmp, open(tmp, "wb") as out:
                for path in paths:
                    array = read_image_shrunk(Path(path), short_side)
                    out.write(array.tobytes())
                    shapes.append(array.shape)
            write_text_atomic(index_path, json.dumps({"shapes": shapes, "short_side": short_side}))
        shapes = np.asarray(json.loads(index_path.read_text())["shapes"], dtype=np.int64).reshape(-1, 3)
        if len(shapes) != len(paths):
            raise RuntimeError(
                f"Cache {index_path} lists {len(shapes)} images, expected {len(paths)}; delete it."
            )
        offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))[:-1]])
        return cls(data_path, offsets, shapes)


class CachedImageDataset(torch.utils.data.Dataset):
    """Like `ImageFileDataset`, but items come from a `DecodedImageStore` instead of the JPEG files."""

    def __init__(
        self, store: DecodedImageStore, store_paths: Sequence[Path], paths, labels, transform=None
    ) -> None:
        position = {p: i for i, p in enumerate(store_paths)}
        missing = [p for p in paths if p not in position]
        if missing:
            raise ValueError(f"{len(missing)} image(s) are not in the decoded cache, e.g. {missing[0]}.")
        self.store = store
        self.paths = tuple(paths)
        self.labels = tuple(labels)
        self.indices = np.asarray([position[p] for p in paths], dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.store[int(self.indices[index])]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
