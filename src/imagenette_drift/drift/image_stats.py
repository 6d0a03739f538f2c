"""Cheap input-level statistics of images, for shifts that a classifier's embeddings are built to ignore.

A classifier learns to be invariant to JPEG artifacts, mild blur or colour casts, so an MMD test on its
embeddings can miss them. These per-image numbers catch such shifts directly; the drift reference tests them
with a per-feature KS test (Bonferroni-corrected), like the softmax outputs.
"""

from __future__ import annotations

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
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}.")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
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
