"""Batch-level MixUp / CutMix for training, with soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


class BatchMixer:
    """Mix each training batch with MixUp (blend) or CutMix (paste a box), chosen at random, with probability `prob`.

    Returns float images in [0, 1] and soft targets (B, num_classes) whose rows sum to 1; an unmixed batch
    comes back as its one-hot targets. Off when both alphas are 0. Draws from torch's global RNG, so
    `seed_everything` makes runs repeat.
    """

    def __init__(
        self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}."
            )
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {prob}.")
        self.num_classes = num_classes
        self.prob = prob
        mixers = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mixers = mixers

    @property
    def enabled(self) -> bool:
        return bool(self.mixers) and self.prob > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        if not self.enabled or len(labels) < 2 or torch.rand(()).item() >= self.prob:
            return x, F.one_hot(labels, self.num_classes).float()
        mixer = self.mixers[int(torch.randint(len(self.mixers), ()).item())]
        return mixer(x, labels)
