"""Imagenette data: layout checks, download, datasets, transforms and the LightningDataModule."""

from imagenette_drift.data.datamodule import ImagenetteDataModule, resolve_root
from imagenette_drift.data.dataset import UNKNOWN_LABEL, ImageFileDataset, verify_images
from imagenette_drift.data.download import download_imagenette, safe_extract
from imagenette_drift.data.images import build_eval_transform, build_train_transform, pil_to_tensor, read_image
from imagenette_drift.data.layout import Split, list_images, scan_split, stratified_holdout

__all__ = [
    "UNKNOWN_LABEL",
    "ImageFileDataset",
    "ImagenetteDataModule",
    "Split",
    "build_eval_transform",
    "build_train_transform",
    "download_imagenette",
    "list_images",
    "pil_to_tensor",
    "read_image",
    "resolve_root",
    "safe_extract",
    "scan_split",
    "stratified_holdout",
    "verify_images",
]
