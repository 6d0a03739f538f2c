"""The network and LightningModule on real images: shapes, embeddings, errors users read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagenette_drift.classes import CLASS_NAMES, WNIDS
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


def test_pretrained_weights_missing_offline_fail_with_advice(tmp_path: Path) -> None:
    """Weights absent from an empty Hugging Face cache with the Hub offline: an error that says what to do.

    Run in a fresh interpreter, since huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when imported; this is the
    same on a connected machine and an air-gapped one.
    """
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    env = os.environ | {
        "HF_HOME": str(empty),
        "HF_HUB_CACHE": str(empty / "hub"),
        "TORCH_HOME": str(empty / "torch"),
        "XDG_CACHE_HOME": str(empty),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    code = (
        "from imagenette_drift.models.net import create_backbone\n"
        "try:\n"
        "    create_backbone('resnet18', 10, pretrained=True)\n"
        "except RuntimeError as e:\n"
        "    print('ERROR', e)\n"
        "else:\n"
        "    print('LOADED')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ERROR"), result.stdout
    assert "pretrained=false" in result.stdout
    assert not any(empty.rglob("*.safetensors"))  # nothing was downloaded


def test_unknown_model_name_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown timm model 'resnet19'"):
        create_backbone("resnet19", 10)


def test_classes_default_to_imagenette_and_otherwise_come_with_their_names() -> None:
    card = ImagenetteClassifier().model_card()
    assert (card.class_names, card.wnids) == (CLASS_NAMES, WNIDS)
    three = ImagenetteClassifier(num_classes=3, class_names=["cat", "dog", "fish"]).model_card()
    assert three.class_names == ("cat", "dog", "fish") == three.wnids and three.num_classes == 3
    with pytest.raises(ValueError, match="class_names must name the 7 classes"):
        ImagenetteClassifier(num_classes=7)
    with pytest.raises(ValueError, match="num_classes=3 but got 2 class_names"):
        ImagenetteClassifier(num_classes=3, class_names=["cat", "dog"])
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        ImagenetteClassifier(num_classes=1, class_names=["cat"])


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
