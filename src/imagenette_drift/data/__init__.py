"""Imagenette data: layout checks, download, datasets, transforms and the LightningDataModule.

Names are re-exported lazily (PEP 562): `from imagenette_drift.data import read_image` loads the image
decoding module only, never Lightning (which `ImagenetteDataModule` needs).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

_EXPORTS = {
    "ImagenetteDataModule": "datamodule",
    "resolve_root": "root",
    "UNKNOWN_LABEL": "dataset",
    "ImageFileDataset": "dataset",
    "verify_images": "dataset",
    "download_imagenette": "download",
    "safe_extract": "download",
    "build_eval_transform": "images",
    "build_train_transform": "images",
    "pil_to_tensor": "images",
    "read_image": "images",
    "read_image_shrunk": "images",
    "Split": "layout",
    "list_images": "layout",
    "scan_split": "layout",
    "stratified_holdout": "layout",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
