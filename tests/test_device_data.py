"""The device-side data path (`--data.device_data`, `configs/presets/gpu_fast.yaml`) on the CPU: crops and
resizes equal torchvision's, every pass covers the split, and the preset trains through `imagenette fit`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import timm
import torch
from torchvision.transforms import v2

from imagenette_drift.data.device import (
    DeviceBatches,
    DeviceImages,
    center_crop_taps,
    column_span,
    crop_taps,
    random_resized_boxes,
    resample,
)
from imagenette_drift.data.images import build_eval_transform, read_image
from imagenette_drift.data.layout import scan_split
from imagenette_drift.optim import ConvMuonSGD
from tests.conftest import CONFIGS, SAMPLE_ROOT


@pytest.fixture(scope="module")
def sample_images() -> tuple[list[Path], DeviceImages]:
    paths = list(scan_split(SAMPLE_ROOT, "val").paths)
    return paths, DeviceImages.decode(paths, "cpu", short_side=176, workers=2)


@pytest.mark.parametrize("size", [128, 176])
def test_random_resized_crops_equal_torchvision(sample_images, size: int) -> None:
    paths, images = sample_images
    generator = torch.Generator().manual_seed(size)
    boxes = random_resized_boxes(images.heights, images.widths, (0.08, 1.0), generator=generator)
    flip = torch.rand(len(paths), generator=generator) < 0.5
    taps = crop_taps(boxes, size)
    crops = resample(images, torch.arange(len(paths)), taps, column_span(taps[2]), flip)
    assert crops.shape == (len(paths), 3, size, size) and crops.dtype == torch.uint8
    for i, path in enumerate(paths):
        top, left, height, width = boxes[i].tolist()
        expected = v2.functional.resized_crop(read_image(path), top, left, height, width, [size, size])
        expected = expected.flip(-1) if flip[i] else expected
        assert (crops[i].int() - expected.int()).abs().max() <= 1, path  # rounding only


@pytest.mark.parametrize("size", [128, 176])
def test_eval_crops_equal_the_eval_transform(sample_images, size: int) -> None:
    paths, images = sample_images
    taps = center_crop_taps(images.heights, images.widths, size)
    crops = resample(images, torch.arange(len(paths)), taps, column_span(taps[2]))
    for i, path in enumerate(paths):
        expected = build_eval_transform(size)(read_image(path))
        assert (crops[i].int() - expected.int()).abs().max() <= 1, path


def test_random_boxes_stay_inside_and_follow_scale_and_ratio() -> None:
    heights = torch.tensor([160, 160, 802, 160] * 500)
    widths = torch.tensor([213, 160, 160, 802] * 500)
    boxes = random_resized_boxes(heights, widths, (0.5, 1.0), generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= heights).all() and (left + w <= widths).all()
    ratio = w / h
    assert (ratio > 0.7).all() and (ratio < 1.4).all()
    area = (h * w) / (heights * widths)
    usual = (heights == 160) & (widths == 213)  # a try always fits: area follows the scale range
    assert area[usual].min() > 0.45 and area[usual].max() <= 1.0


def test_passes_cover_the_split_and_follow_the_size(sample_images) -> None:
    paths, images = sample_images
    labels = list(range(len(paths)))
    size = {"now": 96}
    train = DeviceBatches(images, range(len(paths)), labels, 16, lambda: size["now"], train=True, seed=3)
    first = list(train)
    assert len(first) == len(train) == len(paths) // 16
    assert all(x.shape == (16, 3, 96, 96) and x.dtype == torch.uint8 for x, _ in first)
    seen = torch.cat([y for _, y in first])
    assert len(set(seen.tolist())) == len(seen)  # a permutation: no image twice in a pass
    size["now"] = 112
    second = list(train)
    assert second[0][0].shape[-1] == 112 and not torch.equal(torch.cat([y for _, y in second]), seen)
    evaluation = DeviceBatches(images, range(len(paths)), labels, 16, lambda: 176, train=False)
    batches = list(evaluation)
    assert len(batches) == len(evaluation) == -(-len(paths) // 16)
    assert torch.cat([y for _, y in batches]).tolist() == labels  # every image once, in order


def test_muon_foreach_is_the_same_update() -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet18d", num_classes=10)
    nets = [copy.deepcopy(net), copy.deepcopy(net)]

    def groups(model: torch.nn.Module) -> list[dict]:
        params = list(model.parameters())
        return [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1]}]

    optimizers = [
        ConvMuonSGD(groups(n), weight_decay=5e-5, foreach=f) for n, f in zip(nets, (False, True), strict=True)
    ]
    images, labels = torch.randn(4, 3, 48, 48), torch.randint(0, 10, (4,))
    for _ in range(2):
        for model, optimizer in zip(nets, optimizers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    for a, b in zip(*(n.parameters() for n in nets), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_gpu_fast_preset_fits_through_the_device_data_path(in_tmp: Path) -> None:
    from imagenette_drift.cli import cli_main

    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "imagenette.yaml"),
            "--config",
            str(CONFIGS / "presets" / "gpu_fast.yaml"),
            "--config",
            str(CONFIGS / "presets" / "csv.yaml"),
            f"--data.root={SAMPLE_ROOT}",
            "--trainer.accelerator=cpu",  # the preset's path, on the CPU
            "--data.batch_size=8",
            "--data.eval_batch_size=8",
            "--trainer.fast_dev_run=2",
            # Two steps leave no room for the warmup: at the preset's peak rates batch 8 can diverge.
            "--model.optimizer.init_args.lr=0.02",
            "--model.optimizer.init_args.sgd_lr=0.05",
        ]
    )
    assert cli.datamodule.device_data and cli.datamodule.batch_size == 8
    assert isinstance(cli.trainer.train_dataloader, DeviceBatches)
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, ConvMuonSGD) and optimizer.defaults["foreach"]
    assert cli.trainer.global_step == 2  # two optimizer steps on batches cut by the device path
    written = list((in_tmp / "outputs").rglob("val_metrics.json"))  # validation ran on device-cut crops
    assert written and 0.0 <= json.loads(written[0].read_text())["val/acc"] <= 1.0
