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


def _reference_statistics(images: torch.Tensor) -> torch.Tensor:
    """A frozen copy of the float definition the checkpoints' drift references were computed with."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean, std = x.mean(dim=(2, 3)), x.std(dim=(2, 3))
    high, low = x.amax(dim=1), x.amin(dim=1)
    saturation = ((high - low) / high.clamp(min=1e-3)).mean(dim=(1, 2))
    gray = x.mean(dim=1)
    dx = (gray[:, :, 1:] - gray[:, :, :-1]).abs()
    dy = (gray[:, 1:, :] - gray[:, :-1, :]).abs()
    gradient = dx.mean(dim=(1, 2)) + dy.mean(dim=(1, 2))
    centre = gray[:, 1:-1, 1:-1]
    neighbours = gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
    laplacian = (4 * centre - neighbours).abs().mean(dim=(1, 2))

    def phase_ratio(steps: torch.Tensor, period: int = 8) -> torch.Tensor:
        usable = steps.shape[1] - steps.shape[1] % period
        phases = steps[:, :usable].reshape(len(steps), -1, period).mean(dim=1)
        return phases.amax(dim=1) / phases.mean(dim=1).clamp(min=1e-6)

    blockiness = phase_ratio(dx.mean(dim=1)) + phase_ratio(dy.mean(dim=2))
    clipped_dark = (high <= 2 / 255).float().mean(dim=(1, 2))
    clipped_bright = (low >= 253 / 255).float().mean(dim=(1, 2))
    rest = [saturation, gradient, laplacian, blockiness, clipped_dark, clipped_bright]
    return torch.cat([mean, std, torch.stack(rest, dim=1)], dim=1)


def test_uint8_path_gives_the_reference_values(sample_root: Path) -> None:
    """The fast uint8 path must not move the values stored drift references were computed with."""
    paths = sorted((sample_root / "val").rglob("*.JPEG"))
    real = torch.stack([build_eval_transform(176)(read_image(p)) for p in paths])
    generator = torch.Generator().manual_seed(0)
    flat = torch.zeros(5, 3, 64, 64, dtype=torch.uint8)
    flat[1], flat[2], flat[3, :, :10], flat[4, 0] = 255, 2, 253, 200  # black, white, near-black, clipped, red
    batches = [
        real,
        real[:1],
        real.contiguous(memory_format=torch.channels_last),
        torch.randint(0, 256, (6, 3, 176, 176), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (3, 3, 17, 41), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8, generator=generator),  # fewer steps than 8
        flat,
    ]
    for images in batches:
        stats = image_statistics(images)
        assert stats.shape == (len(images), len(FEATURE_NAMES)) and stats.dtype == torch.float32
        torch.testing.assert_close(stats, _reference_statistics(images), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert image_statistics(real[:0]).shape == (0, len(FEATURE_NAMES))
