"""Read and validate an image-folder data set (root/{train,val}/<class>/*; Imagenette's official layout) and
Imagenette's `noisy_imagenette.csv`."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagenette_drift.classes import WNIDS
from imagenette_drift.errors import BadDataError, MissingDataError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".tif", ".tiff")
NOISE_LEVELS = (0, 1, 5, 25, 50)


@dataclass(frozen=True)
class Split:
    """Image paths and integer labels of one split, in a stable (sorted) order."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)


def find_class_folders(split_dir: Path) -> tuple[str, ...]:
    """The class folder names under `split_dir` (hidden folders ignored), sorted as torchvision's `ImageFolder`."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise MissingDataError(
            f"{split_dir} does not exist: a data root must hold train/ and val/, each with one folder of images "
            f"per class (the official imagenette2-160 layout, or any ImageFolder laid out the same way)."
        )
    return tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))


def scan_split(root: Path, split: str, class_folders: Sequence[str] | None = None) -> Split:
    """List `root/split/<class folder>/*` images with their labels (the folder's index in `class_folders`).

    `class_folders` defaults to the folders found in `root/split`; given (the training split's classes), the
    split must hold exactly those folders. Raises `FileNotFoundError`/`ValueError` naming what is missing.
    """
    split_dir = Path(root) / split
    found = find_class_folders(split_dir)
    expected = tuple(class_folders) if class_folders is not None else found
    if sorted(found) != sorted(expected) or len(expected) < 2:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        raise BadDataError(
            f"{split_dir} must hold exactly the {len(expected)} class folders of the training split (at least 2); "
            f"missing {missing}, unexpected {extra}. Check that --data.root points at an unmodified data set "
            f"(train/ and val/ with the same class folders)."
        )
    index = {folder: i for i, folder in enumerate(expected)}
    paths: list[Path] = []
    labels: list[int] = []
    for folder in expected:
        files = sorted(p for p in (split_dir / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadDataError(f"{split_dir / folder} holds no images; the data set is incomplete.")
        paths += files
        labels += [index[folder]] * len(files)
    return Split(tuple(paths), tuple(labels))


def apply_noisy_labels(split: Split, root: Path, level: int, class_folders: Sequence[str] = WNIDS) -> Split:
    """Relabel `split` from the `noisy_labels_{level}` column of `noisy_imagenette.csv` (level 0: unchanged).

    The CSV names classes by wnid; `class_folders` (the label order of `split`) turns them into indices.
    """
    if level == 0:
        return split
    if level not in NOISE_LEVELS:
        raise ValueError(f"noisy_labels must be one of {NOISE_LEVELS}, got {level}.")
    root = Path(root)
    csv_path = root / "noisy_imagenette.csv"
    if not csv_path.is_file():
        raise MissingDataError(f"noisy_labels={level} needs {csv_path}, which does not exist.")
    column = f"noisy_labels_{level}"
    index = {folder: i for i, folder in enumerate(class_folders)}
    with open(csv_path, newline="") as f:
        table = {row["path"]: row[column] for row in csv.DictReader(f)}
    labels = []
    for path in split.paths:
        rel = path.relative_to(root).as_posix()
        if rel not in table:
            raise BadDataError(f"{rel} is not listed in {csv_path}; the CSV does not match the images.")
        if table[rel] not in index:
            raise BadDataError(f"{csv_path} labels {rel} as {table[rel]!r}, which is not one of the class folders.")
        labels.append(index[table[rel]])
    return Split(split.paths, tuple(labels))


def stratified_holdout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a per-class `fraction` of `split` out with a fixed seed; return (kept, held_out)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return split, Split((), ())
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(set(split.labels)):
        indices = [i for i, y in enumerate(split.labels) if y == label]
        rng.shuffle(indices)
        held.update(indices[: max(1, round(fraction * len(indices)))])
    keep = [i for i in range(len(split)) if i not in held]
    out = sorted(held)
    return _subset(split, keep), _subset(split, out)


def _subset(split: Split, indices: list[int]) -> Split:
    return Split(tuple(split.paths[i] for i in indices), tuple(split.labels[i] for i in indices))


def list_images(folder: Path) -> tuple[Path, ...]:
    """All image files under `folder`, recursively, sorted; for predicting on any folder of images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingDataError(f"{folder} is not a folder of images; pass an existing folder.")
    files = tuple(sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise BadDataError(
            f"{folder} holds no images with a suffix in {IMAGE_SUFFIXES}; pass a folder that holds images."
        )
    return files


def exclude_classes(split: Split, classes: tuple[int, ...]) -> Split:
    """`split` without the images of the given class indices (open-set experiments)."""
    keep = [i for i, label in enumerate(split.labels) if label not in classes]
    return Split(tuple(split.paths[i] for i in keep), tuple(split.labels[i] for i in keep))


def class_indices(names: Sequence[str], classes: Sequence[tuple[str, str]]) -> tuple[int, ...]:
    """Label indices of class folders or class names (case-insensitive) in a `(folder, name)` class table.

    Raises BadDataError naming the valid folders and names when one is unknown.
    """
    by_name = {name.lower(): i for i, (_, name) in enumerate(classes)}
    by_name |= {folder.lower(): i for i, (folder, _) in enumerate(classes)}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise BadDataError(
            f"exclude_classes: unknown class(es) {unknown}; use class folders {[f for f, _ in classes]} or "
            f"names {[n for _, n in classes]}."
        )
    return tuple(sorted({by_name[n.lower()] for n in names}))
