"""Decode images into uint8 RGB tensors and build the train/eval transforms shared by training and serving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torchvision is imported by the transform builders only: decoding does not need it
    from torchvision.transforms import v2


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (L, LA, P, RGBA, CMYK, I;16) to 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Turn a PIL image of any mode into a uint8 (3, H, W) RGB tensor."""
    array = np.asarray(pil_to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to a uint8 (3, H, W) RGB tensor; errors name the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_tensor(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise RuntimeError(f"Cannot decode image {path}: {e}. Remove or replace this file.") from e


def read_image_shrunk(path: str | Path, short_side: int) -> np.ndarray:
    """`read_image` (errors name the file), shrunk to a short side of at most `short_side`, as numpy.

    Never enlarged: an eval size above the files' own (176 px from imagenette2-160) is the eval transform's
    job, so a decoded cache holds exactly what decoding the JPEG gives and training sees the same pixels either way.
    """
    from torchvision.transforms import v2

    image = read_image(path)
    if min(image.shape[1:]) > short_side:
        image = v2.functional.resize(image, short_side, antialias=True)
    return image.numpy()


MAX_ASPECT = 8.0  # above every Imagenette image's (at most 5.0), so their evaluation is unchanged


class CropToAspect(torch.nn.Module):
    """Centre-crop the long side of a (..., H, W) image to at most `max_aspect` times its short side.

    Resizing the short side up to the input size scales the long side by the same factor, so a 1 x 16000 image
    would become 176 x 2,816,000 pixels (seconds of work) of which the centre crop keeps 176 x 176. Cropping
    first bounds the resized image to `max_aspect` x size^2 pixels; images within the ratio pass unchanged.
    """

    def __init__(self, max_aspect: float = MAX_ASPECT) -> None:
        super().__init__()
        if max_aspect < 1:
            raise ValueError(f"max_aspect must be >= 1 (a square), got {max_aspect}.")
        self.max_aspect = max_aspect

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        limit = max(1, int(self.max_aspect * min(height, width)))
        if height > limit:
            top = (height - limit) // 2
            return image[..., top : top + limit, :]
        if width > limit:
            left = (width - limit) // 2
            return image[..., left : left + limit]
        return image


def build_eval_transform(image_size: int) -> v2.Compose:
    """Resize the short side to `image_size` and centre-crop a square: the one eval transform.

    Extreme shapes are first centre-cropped to `MAX_ASPECT` (see `CropToAspect`), so that the cost of an
    image is bounded by its pixels, not by its shape.
    """
    from torchvision.transforms import v2

    return v2.Compose(
        [
            CropToAspect(MAX_ASPECT),
            v2.Resize(image_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(image_size),
        ]
    )


def build_train_transform(image_size: int, min_scale: float = 0.35, hflip: bool = True) -> v2.Compose:
    """Random-resized crop to `image_size` (area scale in [min_scale, 1]) and optional horizontal flip."""
    from torchvision.transforms import v2

    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(
            image_size,
            scale=(min_scale, 1.0),
            interpolation=v2.InterpolationMode.BILINEAR,
            antialias=True,
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)
