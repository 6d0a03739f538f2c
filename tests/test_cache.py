"""The decoded-image cache returns exactly what decoding the JPEG returns, and is built once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imagenette_drift.data import ImagenetteDataModule, read_image, scan_split
from imagenette_drift.data.cache import DecodedImageStore


def test_cached_images_equal_decoded_jpegs(sample_root: Path, tmp_path: Path) -> None:
    paths = scan_split(sample_root, "val").paths
    store = DecodedImageStore.build(paths, tmp_path, short_side=160)
    assert len(store) == len(paths)
    for i in (0, 7, len(paths) - 1):
        assert torch.equal(store[i], read_image(paths[i]))
    assert store.nbytes == sum(read_image(p).numel() for p in paths)


def test_cache_is_reused_and_rebuilt_when_a_file_changes(sample_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = scan_split(sample_copy, "val").paths
    first = DecodedImageStore.build(paths, cache)
    mtime = first.data_path.stat().st_mtime_ns
    again = DecodedImageStore.build(paths, cache)
    assert again.data_path == first.data_path and again.data_path.stat().st_mtime_ns == mtime
    paths[0].write_bytes(paths[1].read_bytes())
    changed = DecodedImageStore.build(paths, cache)
    assert changed.data_path != first.data_path
    assert torch.equal(changed[0], changed[1])


def test_images_are_resized_to_the_short_side(sample_root: Path, tmp_path: Path) -> None:
    paths = scan_split(sample_root, "val").paths[:3]
    store = DecodedImageStore.build(paths, tmp_path, short_side=96)
    for i in range(3):
        assert min(store[i].shape[1:]) == 96


def test_images_are_never_enlarged(sample_root: Path, tmp_path: Path) -> None:
    paths = scan_split(sample_root, "val").paths[:3]
    store = DecodedImageStore.build(paths, tmp_path, short_side=192)
    for i, path in enumerate(paths):
        assert torch.equal(store[i], read_image(path))  # exactly the decoded JPEG, 160 px short side


@pytest.mark.parametrize("image_size", [160, 176])
def test_datamodule_with_cache_gives_identical_eval_batches(
    sample_root: Path, tmp_path: Path, image_size: int
) -> None:
    plain = ImagenetteDataModule(root=str(sample_root), num_workers=0, batch_size=8, image_size=image_size)
    cached = ImagenetteDataModule(
        root=str(sample_root), num_workers=0, batch_size=8, cache_dir=str(tmp_path), image_size=image_size
    )
    for dm in (plain, cached):
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
    for split in ("val", "test"):
        a, b = plain.dataset(split), cached.dataset(split)
        assert a.paths == b.paths and a.labels == b.labels
        for i in range(0, len(a), 9):
            assert torch.equal(a[i][0], b[i][0])
    images, _ = next(iter(cached.train_dataloader()))
    assert images.shape == (8, 3, 128, 128) and images.dtype == torch.uint8


def test_a_corrupt_image_is_named_while_building(sample_copy: Path, tmp_path: Path) -> None:
    victim = scan_split(sample_copy, "val").paths[3]
    victim.write_bytes(victim.read_bytes()[:500])
    with pytest.raises(RuntimeError, match=f"Cannot decode image {victim}"):
        DecodedImageStore.build(scan_split(sample_copy, "val").paths, tmp_path)
    assert not list(tmp_path.glob("*.u8")), "no half-written cache is left behind"
