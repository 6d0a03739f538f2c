"""LightningDataModule for Imagenette-160 v2 or any image folder laid out the same way: val as the test set,
validation carved from train, classes read from the class folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from imagenette_drift.classes import IMAGENETTE_CLASSES, class_table
from imagenette_drift.corruptions import CorruptionTransform
from imagenette_drift.data.cache import CachedImageDataset, DecodedImageStore
from imagenette_drift.data.dataset import ImageFileDataset, verify_images
from imagenette_drift.data.device import DeviceBatches, DeviceImages
from imagenette_drift.data.download import (
    IMAGENETTE_160_MD5,
    IMAGENETTE_160_URL,
    _missing_data_message,
    download_imagenette,
)
from imagenette_drift.data.images import build_eval_transform, build_train_transform
from imagenette_drift.data.layout import (
    Split,
    apply_noisy_labels,
    find_class_folders,
    class_indices,
    exclude_classes,
    list_images,
    scan_split,
    stratified_holdout,
)
from imagenette_drift.data.root import resolve_root
from imagenette_drift.errors import MissingDataError


def ensure_data(root: Path, download: bool, url: str = IMAGENETTE_160_URL, md5: str | None = IMAGENETTE_160_MD5) -> None:
    """Make sure `root` exists: download and unpack the archive there if allowed.

    Raises:
        MissingDataError: `root` is missing and `download` is False, or the download failed (offline).
    """
    if not root.exists():
        if not download:
            raise MissingDataError(_missing_data_message(root, "download=False"))
        download_imagenette(root, url, md5)


class ImagenetteDataModule(pl.LightningDataModule):
    """Imagenette-160 v2 in the official layout, or any image folder laid out the same way.

    Classes: one per folder of `root/train` (sorted, as torchvision's `ImageFolder`); the official val folder
    must hold the same ones. Folders named by Imagenette wnids get Imagenette's class names, any other folder's
    name is its class name. `class_names`, `wnids` and `num_classes` are linked into the model (and so into the
    checkpoint's model card) by `imagenette fit`. Before a missing root is downloaded, they are Imagenette's.

    Splits: `train` minus a stratified, seeded `val_fraction` is the training set; that held-out part is the
    validation set (checkpoint selection, drift reference); the official `val` folder is the *test* set, so
    reported test accuracy is never selected on. Images are uint8 tensors; normalisation happens in the model.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        image_size: int = 160,
        train_image_size: int = 128,
        train_size_schedule: list[int] | None = None,
        min_scale: float = 0.35,
        hflip: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        noisy_labels: Literal[0, 1, 5, 25, 50] = 0,
        predict_dir: str | None = None,
        cache_dir: str | None = None,
        device_data: bool = False,
        corruption: str | None = None,
        severity: int = 3,
        verify: bool = True,
        download: bool = True,
        url: str = IMAGENETTE_160_URL,
        md5: str | None = IMAGENETTE_160_MD5,
        exclude_classes: list[str] | None = None,
    ) -> None:
        """Args:
        root: data folder with train/ and val/, each with one subfolder of images per class (imagenette2-160 or
            any such ImageFolder); default `$IMAGENETTE_DATA`, else `data/imagenette2-160`.
        batch_size: training batch size per device.
        eval_batch_size: batch size for validate/test/predict (default: 2x batch_size).
        num_workers: DataLoader worker processes (0 decodes in the main process).
        image_size: evaluation resolution (short side resize + centre crop); recorded in the checkpoint.
        train_image_size: training crop resolution (lower than image_size exploits the train/test
            resolution discrepancy).
        train_size_schedule: progressive resizing: training sizes from first to last, spread evenly over
            the epochs (e.g. [112, 128, 144] over 6 epochs: two each); crops are cut at `train_image_size`
            and each batch is resized on the device. None trains at `train_image_size` throughout.
        min_scale: smallest area fraction of RandomResizedCrop.
        hflip: random horizontal flips during training.
        val_fraction: per-class fraction of train held out as the validation split (0 trains on all of it).
        split_seed: seed of the held-out split, fixed so runs compare.
        noisy_labels: percentage of noisy training labels from noisy_imagenette.csv (0 = clean).
        predict_dir: any folder of images to predict on; default: the test split.
        cache_dir: decode every image once into a memory-mapped uint8 file here (about 1.5 GB for
            Imagenette-160) and read that in later epochs and runs; None decodes JPEGs on the fly.
        device_data: for `fit` and `validate`, decode the train folder once (from `cache_dir` if set, else
            with one thread per CPU core) into one uint8 tensor on the training device, and cut the batches
            there: random-resized crops and flips for training, the eval crop for validation, antialiased
            bilinear like the CPU transforms (`imagenette_drift.data.device`). No loader workers; with
            `train_size_schedule` the crops are cut at each epoch's size directly. Test and predict keep the
            CPU loaders. For accelerators: on a CPU it works but gains nothing.
        corruption: an ImageNet-C corruption applied to the test and predict images after the eval
            transform (drift experiments; needs the `corruptions` extra), e.g. jpeg_compression.
        severity: corruption severity, 1 (mild) to 5 (severe).
        verify: check every image header before training, so a bad file fails at once, with its path.
        download: download the official archive when the root does not exist.
        url: archive URL used when downloading.
        md5: expected MD5 of the archive (None skips the check).
        exclude_classes: wnids or class names left out of training and the held-out split (open-set
            experiments: the test split keeps them, as images of classes the model never saw).
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        if train_size_schedule is not None and (
            not train_size_schedule or not all(0 < size <= train_image_size for size in train_size_schedule)
        ):
            raise ValueError(
                f"train_size_schedule must list sizes in (0, train_image_size={train_image_size}], got "
                f"{train_size_schedule}: raise --data.train_image_size to the largest size, or drop the schedule."
            )
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}.")
        self.root = resolve_root(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.train_image_size = train_image_size
        self.train_size_schedule = list(train_size_schedule) if train_size_schedule else None
        self.min_scale = min_scale
        self.hflip = hflip
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.noisy_labels = noisy_labels
        self.predict_dir = Path(predict_dir) if predict_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.device_data = device_data
        self._device_images: DeviceImages | None = None
        self.corruption = CorruptionTransform(corruption, severity) if corruption else None
        self._stores: dict[str, tuple[DecodedImageStore, tuple[Path, ...]]] = {}
        self.verify = verify
        self.download = download
        self.url = url
        self.md5 = md5
        self.splits: dict[str, Split] = {}
        self._classes: tuple[tuple[str, str], ...] | None = None
        self.exclude_classes = list(exclude_classes) if exclude_classes else []

    @property
    def classes(self) -> tuple[tuple[str, str], ...]:
        """`(class folder, class name)` per label index, read from `root/train` once (Imagenette's table while
        the root does not exist yet: the default download is Imagenette)."""
        if self._classes is None:
            train_dir = self.root / "train"
            self._classes = class_table(find_class_folders(train_dir)) if train_dir.is_dir() else IMAGENETTE_CLASSES
        return self._classes

    @property
    def class_names(self) -> list[str]:
        """Human-readable class names, by label index (linked to `model.class_names`)."""
        return [name for _, name in self.classes]

    @property
    def wnids(self) -> list[str]:
        """Class folder names (WordNet ids for Imagenette), by label index (linked to `model.wnids`)."""
        return [folder for folder, _ in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare_data(self) -> None:
        """Download the archive once (rank 0) when the root is missing; predicting on a folder needs no data set."""
        if self._predicting_on_folder():
            return
        ensure_data(self.root, self.download, self.url, self.md5)
        if self.cache_dir is not None:
            for folder in ("train", "val"):
                self._store(folder)

    def _store(self, folder: str) -> tuple[DecodedImageStore, tuple[Path, ...]]:
        """The decoded cache of one official folder (built on first use), with its path order."""
        if folder not in self._stores:
            paths = scan_split(self.root, folder, self.wnids).paths
            self._stores[folder] = (DecodedImageStore.build(paths, self.cache_dir, self.image_size), paths)
        return self._stores[folder]

    def _predicting_on_folder(self) -> bool:
        """Whether the trainer runs `predict` on `predict_dir`, which needs nothing from the data root."""
        trainer = self.trainer
        return (
            self.predict_dir is not None and trainer is not None and trainer.state.fn == TrainerFn.PREDICTING
        )

    def setup(self, stage: str | None = None) -> None:
        """Scan and validate the layout, carve the held-out split, and check the images of this stage.

        `predict` with `predict_dir` only lists and checks that folder: the data set need not exist.
        """
        if stage == "predict" and self.predict_dir is not None:
            paths = list_images(self.predict_dir)
            if self.verify:
                verify_images(paths)
            return
        if not self.root.exists():
            raise MissingDataError(_missing_data_message(self.root, "it was not downloaded"))
        if not self.splits:
            folders = self.wnids
            train = scan_split(self.root, "train", folders)
            train, val = stratified_holdout(train, self.val_fraction, self.split_seed)
            if self.exclude_classes:
                excluded = class_indices(self.exclude_classes, self.classes)
                train, val = exclude_classes(train, excluded), exclude_classes(val, excluded)
            self.splits = {
                "train": apply_noisy_labels(train, self.root, self.noisy_labels, folders),
                "val": val,
                "test": scan_split(self.root, "val", folders),
            }
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        if self.verify:
            for name in needed.get(stage or "fit", tuple(self.splits)):
                verify_images(self.splits[name].paths)

    def _on_device(self) -> tuple[DeviceImages, dict[Path, int]]:
        """The train folder decoded on the training device (built on first use), and each path's position."""
        paths = scan_split(self.root, "train", self.wnids).paths
        if self._device_images is None:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            if self.cache_dir is not None:
                store, _ = self._store("train")
                self._device_images = DeviceImages.from_store(store, device)
            else:
                self._device_images = DeviceImages.decode(paths, device, self.image_size)
        return self._device_images, {p: i for i, p in enumerate(paths)}

    def _current_train_size(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return self.train_size(0, 1)
        return self.train_size(trainer.current_epoch, trainer.max_epochs or 1)

    def _eval_size(self) -> int:
        return self.image_size

    def _device_batches(self, split: Literal["train", "val"]) -> DeviceBatches:
        images, position = self._on_device()
        data = self.splits[split]
        missing = [p for p in data.paths if p not in position]
        if missing:
            raise ValueError(
                f"{len(missing)} image(s) of the {split} split are not in {self.root / 'train'}."
            )
        trainer = self.trainer
        train = split == "train"
        return DeviceBatches(
            images,
            [position[p] for p in data.paths],
            data.labels,
            self.batch_size if train else self.eval_batch_size,
            self._current_train_size if train else self._eval_size,
            train=train,
            min_scale=self.min_scale,
            hflip=self.hflip,
            seed=torch.initial_seed() % 2**31,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def _loader(self, dataset: ImageFileDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def dataset(self, split: Literal["train", "val", "test"]) -> ImageFileDataset | CachedImageDataset:
        """The dataset of one split with its transform (train: augmented; val/test: the eval transform)."""
        data = self.splits[split]
        if split == "train":
            transform = build_train_transform(self.train_image_size, self.min_scale, self.hflip)
        else:
            transform = self._eval_transform(corrupted=split == "test")
        if self.cache_dir is None:
            return ImageFileDataset(data.paths, data.labels, transform)
        store, store_paths = self._store("val" if split == "test" else "train")
        return CachedImageDataset(store, store_paths, data.paths, data.labels, transform)

    def _eval_transform(self, corrupted: bool) -> v2.Compose:
        steps = [build_eval_transform(self.image_size)]
        if corrupted and self.corruption is not None:
            steps.append(self.corruption)
        return v2.Compose(steps)

    def train_size(self, epoch: int, max_epochs: int) -> int:
        """Training image size at `epoch` (0-based) of `max_epochs`; the last epoch always gets the last size."""
        if not self.train_size_schedule:
            return self.train_image_size
        sizes = self.train_size_schedule
        if epoch >= max_epochs - 1:
            return sizes[-1]
        return sizes[min(len(sizes) - 1, epoch * len(sizes) // max(1, max_epochs))]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Resize training batches to this epoch's size of `train_size_schedule` (on the device: cheap)."""
        if not self.train_size_schedule or self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        size = self.train_size(self.trainer.current_epoch, self.trainer.max_epochs or 1)
        if images.shape[-1] != size or images.shape[-2] != size:
            x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
            images = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images, labels

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_data:
            return self._device_batches("train")
        return self._loader(self.dataset("train"), self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        if not self.splits["val"]:
            return []  # val_fraction=0: training on all of train, no validation loop
        if self.device_data:
            return self._device_batches("val")
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            return self.test_dataloader()
        dataset = ImageFileDataset(list_images(self.predict_dir), None, self._eval_transform(corrupted=True))
        return self._loader(dataset, self.eval_batch_size, shuffle=False)
