"""Cheap input-level statistics of images, for shifts that a classifier's embeddings are built to ignore.

A classifier learns to be invariant to JPEG artifacts, mild blur or colour casts, so an MMD test on its
embeddings can miss them. These per-image numbers catch such shifts directly; the drift reference tests them
with a per-feature KS test (Bonferroni-corrected), like the softmax outputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

FEATURE_NAMES = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "saturation",
    "gradient",
    "laplacian",
    "blockiness",
    "clipped_dark",
    "clipped_bright",
)


def image_statistics(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 (or [0, 1] float) RGB images -> (B, 12) float32 statistics, see FEATURE_NAMES.

    `blockiness` is the largest ratio of the mean horizontal+vertical step across one of the 8 pixel phases to
    the mean over all phases: JPEG's 8x8 block edges raise one phase whatever the crop offset.

    uint8 images on the CPU (what serving and the data loaders give) take an integer path, one image at a
    time (one thread, 176 px: about 0.2 ms per image against 0.9-1.3 ms for the float path with warm caches,
    0.55 against 1.1 ms at 160 px right after a forward pass; benchmarks/image_stats_speed.py): gray is the
    exact integer r+g+b, its steps and Laplacian are exact int16, the channel moments exact float64 sums. It
    gives the float path's values to float32 rounding (tests/drift/test_image_stats.py checks that against
    the float definition); float images, and images on other devices, take the float definition itself.

    Raises:
        ValueError: `images` is not (B, 3, H, W).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}.")
    if images.dtype == torch.uint8 and images.device.type == "cpu":
        pixels = images.detach().numpy()
        out = np.empty((len(pixels), len(FEATURE_NAMES)), dtype=np.float32)
        with np.errstate(
            divide="ignore", invalid="ignore"
        ):  # images under 3x3 pixels: nan, as the float path
            for image, row in zip(pixels, out, strict=True):
                _uint8_image_statistics(image, row)
        return torch.from_numpy(out)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return _float_statistics(x)


def _uint8_image_statistics(x: np.ndarray, out: np.ndarray) -> None:
    """One uint8 (3, H, W) image's statistics into `out` (12,), in the float path's units.

    Small temporaries (one image, int16 where exact) keep it in cache: batching whole tensors through many
    full-size passes is what made the float path slow. gray is r+g+b (765 x the float path's gray).
    """
    _, height, width = x.shape
    n = height * width
    # Channel moments from exact float64 sums of integers: var = (n S2 - S1^2) / (n (n - 1)), like Tensor.std.
    values = np.empty(n, dtype=np.float64)  # one channel at a time: a small footprint stays in cache
    for c in range(3):
        np.copyto(values, x[c].reshape(n))
        s1, s2 = float(values.sum()), float(np.dot(values, values))
        out[c] = s1 / (255.0 * n)
        out[3 + c] = math.sqrt(max(n * s2 - s1 * s1, 0.0) / (n * (n - 1.0))) / 255.0 if n > 1 else math.nan
    high, low = x.max(axis=0), x.min(axis=0)
    # (high - low) / high, 0 where high == 0 (the float path divides by high clamped to 1e-3 there: 0 too).
    high_f = high.astype(np.float32)
    ratio = high_f - low
    ratio /= np.maximum(high_f, 1.0, out=high_f)
    saturation = float(ratio.sum()) / n
    clipped_dark = np.count_nonzero(high <= 2) / n
    clipped_bright = np.count_nonzero(low >= 253) / n
    gray = x[0].astype(np.int16)
    gray += x[1]
    gray += x[2]
    dx = gray[:, 1:] - gray[:, :-1]  # signed steps, (H, W-1)
    dy = gray[1:, :] - gray[:-1, :]  # (H-1, W)
    # 4c - up - down - left - right = (c - up) - (down - c) + (c - left) - (right - c)
    laplacian = dy[:-1, 1:-1] - dy[1:, 1:-1]
    laplacian += dx[1:-1, :-1]
    laplacian -= dx[1:-1, 1:]
    np.abs(laplacian, out=laplacian)
    laplacian_mean = laplacian.sum(dtype=np.int64) / (765.0 * (height - 2) * (width - 2))
    np.abs(dx, out=dx)
    np.abs(dy, out=dy)
    column_sums = dx.sum(axis=0, dtype=np.int64)  # (W-1,) sum of |step| per column, over H rows
    row_sums = dy.sum(axis=1, dtype=np.int64)  # (H-1,) per row, over W columns
    gradient = int(column_sums.sum()) / (765.0 * height * (width - 1)) + int(row_sums.sum()) / (
        765.0 * width * (height - 1)
    )
    blockiness = _phase_ratio_of_sums(column_sums, 765.0 * height) + _phase_ratio_of_sums(
        row_sums, 765.0 * width
    )
    out[6:] = (saturation, gradient, laplacian_mean, blockiness, clipped_dark, clipped_bright)


def _phase_ratio_of_sums(sums: np.ndarray, scale: float, period: int = 8) -> float:
    """`_phase_ratio` of one image's (L,) integer step sums, each `scale` x its mean step in the float path's
    units; nan when L < period (as the float path)."""
    usable = len(sums) - len(sums) % period
    if usable == 0:
        return float("nan")
    phases = sums[:usable].reshape(-1, period).sum(axis=0).tolist()  # exact integers
    per_phase = scale * (usable // period)  # phase sum / per_phase = the phase's mean step
    return (max(phases) / per_phase) / max(sum(phases) / (period * per_phase), 1e-6)


def _float_statistics(x: Tensor) -> Tensor:
    """The definition of `image_statistics` on [0, 1] float images (B, 3, H, W) -> (B, 12) float32."""
    mean = x.mean(dim=(2, 3))
    std = x.std(dim=(2, 3))
    high, low = x.amax(dim=1), x.amin(dim=1)
    saturation = ((high - low) / high.clamp(min=1e-3)).mean(dim=(1, 2))
    gray = x.mean(dim=1)
    dx = (gray[:, :, 1:] - gray[:, :, :-1]).abs()
    dy = (gray[:, 1:, :] - gray[:, :-1, :]).abs()
    gradient = dx.mean(dim=(1, 2)) + dy.mean(dim=(1, 2))
    laplacian = (
        (
            4 * gray[:, 1:-1, 1:-1]
            - gray[:, :-2, 1:-1]
            - gray[:, 2:, 1:-1]
            - gray[:, 1:-1, :-2]
            - gray[:, 1:-1, 2:]
        )
        .abs()
        .mean(dim=(1, 2))
    )
    blockiness = _phase_ratio(dx.mean(dim=1)) + _phase_ratio(dy.mean(dim=2))
    clipped_dark = (high <= 2 / 255).float().mean(dim=(1, 2))
    clipped_bright = (low >= 253 / 255).float().mean(dim=(1, 2))
    return torch.cat(
        [
            mean,
            std,
            torch.stack([saturation, gradient, laplacian, blockiness, clipped_dark, clipped_bright], dim=1),
        ],
        dim=1,
    )


def _phase_ratio(steps: Tensor, period: int = 8) -> Tensor:
    """(B, L) mean absolute steps along one axis -> (B,) max over phases of the per-phase mean / overall mean."""
    usable = steps.shape[1] - steps.shape[1] % period
    phases = steps[:, :usable].reshape(len(steps), -1, period).mean(dim=1)
    return phases.amax(dim=1) / phases.mean(dim=1).clamp(min=1e-6)
