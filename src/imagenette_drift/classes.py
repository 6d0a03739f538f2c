"""The Imagenette class table: the one place wnids and class names are written down."""

from __future__ import annotations

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
