"""Input-level statistics on real images: they move the way the shift says, and detect JPEG artifacts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFilter

from imagenette_drift.data import build_eval_transform, pil_to_tensor, read_image
from imagenette_drift.drift import KSDriftDetector, image_statistics
from imagenette_drift.drift.image_stats import FEATURE_NAMES


@pytest.fixture(scope="module")
def pil_images(sample_root: Path) -> list[Image.Image]:
    transform = build_eval_transform(160)
    paths = sorted((sample_root / "val").rglob("*.JPEG"))
    return [Image.fromarray(transform(read_image(p)).permute(1, 2, 0).numpy()) for p in paths]


def _stats(images: list[Image.Image]) -> torch.Tensor:
    return image_statistics(torch.stack([pil_to_tensor(i) for i in images]))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_shape_names_and_channel_means(pil_images: list[Image.Image]) -> None:
    images = torch.stack([pil_to_tensor(i) for i in pil_images[:4]])
    stats = image_statistics(images)
    assert stats.shape == (4, len(FEATURE_NAMES)) and stats.dtype == torch.float32
    torch.testing.assert_close(stats[:, :3], images.float().mean(dim=(2, 3)) / 255)
    torch.testing.assert_close(image_statistics(images.float() / 255), stats)


def test_blur_lowers_gradients_and_jpeg_raises_blockiness(pil_images: list[Image.Image]) -> None:
    clean = _stats(pil_images)
    blurred = _stats([i.filter(ImageFilter.GaussianBlur(2)) for i in pil_images])
    compressed = _stats([_jpeg(i, quality=15) for i in pil_images])
    gradient, blockiness = FEATURE_NAMES.index("gradient"), FEATURE_NAMES.index("blockiness")
    assert (blurred[:, gradient] < clean[:, gradient]).all()
    assert compressed[:, blockiness].mean() > clean[:, blockiness].mean() * 1.1


def test_ks_on_input_statistics_detects_jpeg_that_embeddings_ignore(pil_images: list[Image.Image]) -> None:
    reference, clean = pil_images[:20], pil_images[20:]
    detector = KSDriftDetector(_stats(reference), alpha=0.05)
    assert not detector.test(_stats(clean)).drift
    assert detector.test(_stats([_jpeg(i, quality=30) for i in clean])).drift


def test_bad_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        image_statistics(torch.zeros(3, 32, 32, dtype=torch.uint8))
