"""The data module on the real sample (and on the full set when it is present)."""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from imagenette_drift.classes import NUM_CLASSES, WNIDS
from imagenette_drift.data import ImagenetteDataModule, read_image, safe_extract
from imagenette_drift.data.download import md5sum
from tests.conftest import import_or_fail

SAMPLE_TRAIN_PER_CLASS, SAMPLE_VAL_PER_CLASS = 8, 4


def test_sample_splits_are_stratified_disjoint_and_seeded(sample_root: Path) -> None:
    dm = ImagenetteDataModule(root=str(sample_root), val_fraction=0.25, split_seed=3, num_workers=0)
    dm.setup("fit")
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert Counter(val.labels) == {c: 2 for c in range(NUM_CLASSES)}
    assert Counter(train.labels) == {c: 6 for c in range(NUM_CLASSES)}
    assert Counter(test.labels) == {c: SAMPLE_VAL_PER_CLASS for c in range(NUM_CLASSES)}
    assert not set(train.paths) & set(val.paths)
    assert all(p.parts[-3] == "val" for p in test.paths)
    again = ImagenetteDataModule(root=str(sample_root), val_fraction=0.25, split_seed=3)
    again.setup("fit")
    other = ImagenetteDataModule(root=str(sample_root), val_fraction=0.25, split_seed=4)
    other.setup("fit")
    assert again.splits["val"] == val
    assert other.splits["val"] != val


def test_val_fraction_zero_trains_on_all_of_train(sample_root: Path) -> None:
    dm = ImagenetteDataModule(root=str(sample_root), val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.splits["train"]) == NUM_CLASSES * SAMPLE_TRAIN_PER_CLASS
    assert dm.val_dataloader() == []


def test_batches_are_uint8_rgb_at_the_configured_sizes(sample_root: Path) -> None:
    dm = ImagenetteDataModule(root=str(sample_root), batch_size=8, train_image_size=96, image_size=112)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 96, 96) and images.dtype == torch.uint8
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (3, 112, 112)
    assert labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("schedule", "epochs", "expected"),
    [
        ([112, 128, 144], 6, [112, 112, 128, 128, 144, 144]),
        ([112, 128, 144], 5, [112, 112, 128, 128, 144]),
        ([112, 128, 144], 2, [112, 144]),  # the last epoch always trains at the last size
        ([96], 3, [96, 96, 96]),
    ],
)
def test_train_size_schedule_spreads_the_sizes_over_the_epochs(
    sample_root: Path, schedule: list[int], epochs: int, expected: list[int]
) -> None:
    dm = ImagenetteDataModule(root=str(sample_root), train_image_size=144, train_size_schedule=schedule)
    assert [dm.train_size(epoch, epochs) for epoch in range(epochs)] == expected


@pytest.mark.slow  # trains
def test_progressive_resizing_resizes_training_batches_only(sample_root: Path, in_tmp: Path) -> None:
    import lightning.pytorch as pl

    from imagenette_drift.models import ImagenetteClassifier

    class RecordSizes(pl.Callback):
        def __init__(self) -> None:
            self.train: list[tuple[int, ...]] = []
            self.val: list[tuple[int, ...]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.train.append((trainer.current_epoch, *batch[0].shape[-2:]))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            self.val.append(tuple(batch[0].shape[-2:]))

    dm = ImagenetteDataModule(
        root=str(sample_root),
        batch_size=8,
        num_workers=0,
        image_size=80,
        train_image_size=96,
        train_size_schedule=[64, 96],
    )
    sizes = RecordSizes()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[sizes],
        num_sanity_val_steps=0,
    )
    trainer.fit(ImagenetteClassifier(image_size=80, channels_last=False), datamodule=dm)
    assert sizes.train == [(0, 64, 64), (0, 64, 64), (1, 96, 96), (1, 96, 96)]
    assert sizes.val == [(80, 80), (80, 80)]


def test_train_size_schedule_above_the_crop_size_is_refused(sample_root: Path) -> None:
    with pytest.raises(
        ValueError, match="train_size_schedule must list sizes in \\(0, train_image_size=128\\]"
    ):
        ImagenetteDataModule(root=str(sample_root), train_image_size=128, train_size_schedule=[128, 160])


def test_grayscale_images_become_three_identical_channels(sample_root: Path) -> None:
    gray = sample_root / "train" / "n03000684" / "n03000684_14916.JPEG"  # mode "L" in the sample
    image = read_image(gray)
    assert image.shape[0] == 3 and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_noisy_labels_come_from_the_csv(sample_root: Path) -> None:
    with open(sample_root / "noisy_imagenette.csv", newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    dm = ImagenetteDataModule(root=str(sample_root), val_fraction=0.0, noisy_labels=50)
    dm.setup("fit")
    train = dm.splits["train"]
    expected = [
        WNIDS.index(rows[p.relative_to(sample_root).as_posix()]["noisy_labels_50"]) for p in train.paths
    ]
    assert list(train.labels) == expected
    clean = [WNIDS.index(p.parent.name) for p in train.paths]
    assert sum(a != b for a, b in zip(expected, clean, strict=True)) > 0  # the sample holds noisy rows


def test_missing_root_names_the_three_ways_to_provide_data(tmp_path: Path) -> None:
    dm = ImagenetteDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(
        FileNotFoundError, match=r"--data.root(.|\n)*IMAGENETTE_DATA(.|\n)*data/imagenette2-160"
    ):
        dm.prepare_data()


def test_offline_download_fails_at_once_with_the_same_message(tmp_path: Path) -> None:
    # A closed loopback port: the same URLError a machine without internet gets, without waiting.
    dm = ImagenetteDataModule(root=str(tmp_path / "imagenette2-160"), url="http://127.0.0.1:9/x.tgz")
    with pytest.raises(FileNotFoundError, match="IMAGENETTE_DATA"):
        dm.prepare_data()
    assert not any(tmp_path.iterdir()) or not (tmp_path / "imagenette2-160").exists()


def test_root_falls_back_to_the_environment_variable(
    sample_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGENETTE_DATA", str(sample_root))
    assert ImagenetteDataModule().root == sample_root
    monkeypatch.delenv("IMAGENETTE_DATA")
    assert ImagenetteDataModule().root == Path("data/imagenette2-160")


def test_missing_class_folder_is_named(sample_copy: Path) -> None:
    import shutil

    shutil.rmtree(sample_copy / "val" / "n03888257")
    dm = ImagenetteDataModule(root=str(sample_copy))
    with pytest.raises(ValueError, match=r"missing \['n03888257'\]"):
        dm.setup("test")


def test_corrupt_jpeg_is_reported_with_its_path_before_training(sample_copy: Path) -> None:
    bad = sample_copy / "train" / "n01440764" / "corrupt.JPEG"
    bad.write_bytes(b"this is not a jpeg" * 10)
    dm = ImagenetteDataModule(root=str(sample_copy), val_fraction=0.0)
    with pytest.raises(RuntimeError, match=r"1 image file\(s\) cannot be read(.|\n)*corrupt\.JPEG"):
        dm.setup("fit")


def test_truncated_jpeg_is_reported_with_its_path_when_decoded(sample_copy: Path) -> None:
    victim = sorted((sample_copy / "val" / "n01440764").glob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:600])
    with pytest.raises(RuntimeError, match=f"Cannot decode image {victim}"):
        read_image(victim)


def _serve(folder: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_verifies_and_unpacks_the_archive_from_a_real_http_server(
    sample_root: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "imagenette2-160.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sample_root, arcname="imagenette2-160")
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_port}/imagenette2-160.tgz"
    try:
        root = tmp_path / "data" / "imagenette2-160"
        bad = ImagenetteDataModule(root=str(root), url=url, md5="0" * 32)
        with pytest.raises(RuntimeError, match="Checksum mismatch"):
            bad.prepare_data()
        assert not root.exists() and not list((tmp_path / "data").glob("*.tgz"))
        dm = ImagenetteDataModule(root=str(root), url=url, md5=md5sum(archive))
        dm.prepare_data()
        dm.setup("fit")
    finally:
        server.shutdown()
    digest = lambda r: sorted(  # noqa: E731
        (p.relative_to(r).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in r.rglob("*")
        if p.is_file()
    )
    assert digest(root) == digest(sample_root)
    assert not list((tmp_path / "data").glob("*.tgz")), "the archive is removed after extraction"


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/imagenette-abs-escape.txt"])
def test_safe_extract_refuses_path_traversal(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)  # written raw: tar.add() would strip a leading "/"
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(RuntimeError, match="outside"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/imagenette-abs-escape.txt").exists()
    assert not list(dest.iterdir())


def test_safe_extract_refuses_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("imagenette2-160/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(RuntimeError, match="link or special file"):
        safe_extract(archive, tmp_path / "dest")


# Per-class counts from the data set's MANIFEST.md (train, val).
FULL_COUNTS = {
    "n01440764": (963, 387),
    "n02102040": (955, 395),
    "n02979186": (993, 357),
    "n03000684": (858, 386),
    "n03028079": (941, 409),
    "n03394916": (956, 394),
    "n03417042": (961, 389),
    "n03425413": (931, 419),
    "n03445777": (951, 399),
    "n03888257": (960, 390),
}


@pytest.mark.full_data
def test_full_data_counts_and_holdout(full_root: Path) -> None:
    dm = ImagenetteDataModule(root=str(full_root), val_fraction=0.1, split_seed=0, verify=False)
    dm.setup("fit")
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert len(train) + len(val) == 9469 and len(test) == 3925
    test_counts = Counter(test.labels)
    trainval_counts = Counter(train.labels) + Counter(val.labels)
    for index, wnid in enumerate(WNIDS):
        assert (trainval_counts[index], test_counts[index]) == FULL_COUNTS[wnid]
        assert Counter(val.labels)[index] == round(0.1 * FULL_COUNTS[wnid][0])
    assert len(val) == 947


@pytest.mark.full_data
@pytest.mark.slow
def test_full_data_images_all_pass_verification(full_root: Path) -> None:
    dm = ImagenetteDataModule(root=str(full_root), verify=True)
    dm.setup("fit")
    dm.setup("test")


def test_corruption_applies_to_test_split_only_and_deterministically(sample_root: Path) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    clean = ImagenetteDataModule(root=str(sample_root))
    noisy = ImagenetteDataModule(root=str(sample_root), corruption="gaussian_noise", severity=5)
    for dm in (clean, noisy):
        dm.setup("fit")
    assert torch.equal(clean.dataset("val")[0][0], noisy.dataset("val")[0][0])
    a, b = clean.dataset("test")[3][0], noisy.dataset("test")[3][0]
    assert a.shape == b.shape and b.dtype == torch.uint8
    assert (a.float() - b.float()).abs().mean() > 20
    assert torch.equal(noisy.dataset("test")[3][0], b)  # same pixels -> same seed -> same noise


def test_unknown_corruption_is_refused_at_construction(sample_root: Path) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    with pytest.raises(ValueError, match="Unknown corruption 'sunburn'"):
        ImagenetteDataModule(root=str(sample_root), corruption="sunburn")


def test_exclude_classes_leaves_them_out_of_training_and_held_out_only(sample_root: Path) -> None:
    from imagenette_drift.data import ImagenetteDataModule

    dm = ImagenetteDataModule(root=str(sample_root), exclude_classes=["tench", "n03888257"], verify=False)
    dm.setup("fit")
    assert not {0, 9} & set(dm.splits["train"].labels) and not {0, 9} & set(dm.splits["val"].labels)
    assert len(set(dm.splits["train"].labels)) == 8
    assert {0, 9} <= set(dm.splits["test"].labels)
    with pytest.raises(ValueError, match="unknown class"):
        ImagenetteDataModule(root=str(sample_root), exclude_classes=["zebra"], verify=False).setup("fit")
