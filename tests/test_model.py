"""The network and LightningModule on real images: shapes, embeddings, errors users read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imagenette_drift.data import build_eval_transform, read_image
from imagenette_drift.models import ImagenetteClassifier, ImagenetteNet, create_backbone
from imagenette_drift.models.classifier import lr_factor


@pytest.fixture(scope="module")
def real_images(sample_root: Path) -> torch.Tensor:
    transform = build_eval_transform(96)
    return torch.stack([transform(read_image(p)) for p in sorted((sample_root / "val").rglob("*.JPEG"))[:4]])


def test_embed_and_head_reproduce_forward(real_images: torch.Tensor) -> None:
    net = ImagenetteNet("resnet18", 10).eval()
    with torch.inference_mode():
        features = net.embed(real_images)
        logits = net(real_images)
        from_features = net.head(features)
    assert features.shape == (4, 512)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    torch.testing.assert_close(from_features, logits)


def test_uint8_and_unit_float_inputs_agree(real_images: torch.Tensor) -> None:
    net = ImagenetteNet("resnet18", 10).eval()
    with torch.inference_mode():
        torch.testing.assert_close(net(real_images), net(real_images.float() / 255.0))


def test_classifier_embed_is_the_penultimate_layer(real_images: torch.Tensor) -> None:
    module = ImagenetteClassifier(model_name="resnet18").eval()
    with torch.inference_mode():
        assert module.embed(real_images).shape == (4, 512)


def test_pretrained_without_network_fails_fast_with_advice() -> None:
    with pytest.raises(RuntimeError, match="pretrained=false"):
        create_backbone("resnet18", 10, pretrained=True)


def test_unknown_model_name_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown timm model 'resnet19'"):
        create_backbone("resnet19", 10)


def test_wrong_num_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="num_classes must be 10"):
        ImagenetteClassifier(num_classes=7)


def test_no_weight_decay_on_norms_and_biases() -> None:
    module = ImagenetteClassifier()
    decay, no_decay = module._param_groups()
    assert no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_warms_up_then_decays_to_zero(schedule: str) -> None:
    factor = lr_factor(schedule, warmup=10, total=100, warmup_start=0.04)
    assert factor(0) == pytest.approx(0.04)
    assert factor(10) == pytest.approx(1.0)
    values = [factor(s) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("constant", 10, 100)(70) == 1.0
