"""MixUp / CutMix on real sample images: soft targets that match what was mixed, and a training run with them."""

from __future__ import annotations

import pytest
import torch

from imagenette_drift.cli import cli_main
from imagenette_drift.data import ImagenetteDataModule
from imagenette_drift.models import BatchMixer
from tests.conftest import CONFIGS, quickstart_args


@pytest.fixture(scope="module")
def batch(sample_root) -> tuple[torch.Tensor, torch.Tensor]:
    dm = ImagenetteDataModule(
        root=str(sample_root), batch_size=16, num_workers=0, image_size=64, train_image_size=64
    )
    dm.setup("fit")
    torch.manual_seed(0)
    return next(iter(dm.train_dataloader()))


def test_off_gives_unit_images_and_one_hot_targets(batch) -> None:
    images, labels = batch
    mixed, targets = BatchMixer(10)(images, labels)
    assert not BatchMixer(10).enabled
    torch.testing.assert_close(mixed, images.float() / 255)
    assert torch.equal(targets.argmax(1), labels) and torch.equal(targets.sum(1), torch.ones(len(labels)))


def test_mixup_blends_each_image_with_its_neighbour_in_the_targets_proportion(batch) -> None:
    images, labels = batch
    torch.manual_seed(1)
    mixed, targets = BatchMixer(10, mixup_alpha=0.4)(images, labels)
    x = images.float() / 255
    i = next(i for i in range(len(labels)) if labels[i] != labels[i - 1])
    lam = targets[i, labels[i]].item()
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.roll(1, 0), rtol=0, atol=1e-6)
    torch.testing.assert_close(targets.sum(1), torch.ones(len(labels)))


def test_cutmix_pastes_a_box_whose_area_is_the_neighbours_target_weight(batch) -> None:
    images, labels = batch
    torch.manual_seed(3)
    mixed, targets = BatchMixer(10, cutmix_alpha=1.0)(images, labels)
    x = images.float() / 255
    own = (mixed == x).all(dim=1)  # (B, H, W): pixels kept from the image itself
    other = (mixed == x.roll(1, 0)).all(dim=1)
    assert (own | other).all()  # every pixel comes from one of the two images, untouched
    i = next(i for i in range(len(labels)) if labels[i] != labels[i - 1])
    pasted = (~own[i]).float().mean().item()
    assert 0 < pasted < 1
    assert targets[i, labels[i - 1]].item() == pytest.approx(pasted, abs=0.02)


def test_prob_zero_never_mixes_and_bad_values_are_named(batch) -> None:
    images, labels = batch
    _, targets = BatchMixer(10, mixup_alpha=1.0, prob=0.0)(images, labels)
    assert torch.equal(targets.argmax(1), labels) and targets.max() == 1
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha must be >= 0"):
        BatchMixer(10, mixup_alpha=-1.0)
    with pytest.raises(ValueError, match=r"mix_prob must be in \[0, 1\]"):
        BatchMixer(10, cutmix_alpha=1.0, prob=1.5)


@pytest.mark.slow
def test_fit_with_mixup_and_cutmix_from_the_command_line(in_tmp) -> None:
    cli = cli_main(
        [
            *quickstart_args("fit", "--config", str(CONFIGS / "presets" / "debug.yaml")),
            "--model.mixup_alpha=0.2",
            "--model.cutmix_alpha=1.0",
            "--model.mix_prob=0.5",
        ]
    )
    assert cli.model.mixer.enabled and cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_epoch"])
