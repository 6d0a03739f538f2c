"""Class tables: Imagenette's (the one place its wnids and names are written down) and any image folder's."""

from __future__ import annotations

from collections.abc import Iterable

# (wnid, human-readable name), in the canonical order used for label indices.
IMAGENETTE_CLASSES: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench"),
    ("n02102040", "English springer"),
    ("n02979186", "cassette player"),
    ("n03000684", "chain saw"),
    ("n03028079", "church"),
    ("n03394916", "French horn"),
    ("n03417042", "garbage truck"),
    ("n03425413", "gas pump"),
    ("n03445777", "golf ball"),
    ("n03888257", "parachute"),
)

WNIDS: tuple[str, ...] = tuple(wnid for wnid, _ in IMAGENETTE_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(name for _, name in IMAGENETTE_CLASSES)
NUM_CLASSES: int = len(IMAGENETTE_CLASSES)
WNID_TO_INDEX: dict[str, int] = {wnid: i for i, wnid in enumerate(WNIDS)}


def class_table(folder_names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`(class folder, human-readable name)` per class of an image-folder data set, sorted by folder name.

    The order is torchvision `ImageFolder`'s (sorted folder names), so label `i` is the `i`-th folder. A folder
    named by an Imagenette wnid gets its name from `IMAGENETTE_CLASSES` (so the ten Imagenette folders give that
    table exactly); any other folder's name is its class name. Raises `ValueError` for fewer than two classes.
    """
    folders = sorted(set(folder_names))
    if len(folders) < 2:
        raise ValueError(f"A classifier needs at least 2 class folders, got {folders}.")
    names = dict(IMAGENETTE_CLASSES)
    return tuple((folder, names.get(folder, folder)) for folder in folders)
