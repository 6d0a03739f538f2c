"""ImageNet-C corruptions (Hendrycks & Dietterich, 2019) for drift experiments, via the `corrupt-tta` package.

A thin adapter: names and severities are validated here, the corruptions themselves come from
``corrupt_tta`` (an optional dependency: ``pip install 'imagenette-drift[corruptions]'``).
"""

from __future__ import annotations

import warnings
import zlib
from types import ModuleType

import numpy as np
from PIL import Image

__all__ = ["CORRUPTIONS", "CorruptionTransform", "corrupt"]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)

# corrupt-tta draws impulse noise from a fresh, OS-seeded numpy Generator that ignores numpy's global state.
_UNSEEDABLE = frozenset({"impulse_noise"})


def _corrupt_tta() -> ModuleType:
    """Import ``corrupt_tta`` lazily so this module imports without the optional dependency."""
    try:
        import corrupt_tta
    except ImportError as e:
        raise ImportError(
            "Image corruptions need the optional `corrupt-tta` package; install it with "
            "`pip install 'imagenette-drift[corruptions]'`."
        ) from e
    return corrupt_tta


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Return ``image`` as a uint8 ``(H, W, 3)`` RGB array (grayscale is replicated to three channels)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`image` must be a PIL image or a uint8 numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise TypeError(
            f"`image` must have dtype uint8 (values 0-255), got {image.dtype}; "
            "convert with np.clip(image, 0, 255).astype(np.uint8)."
        )
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"`image` must have shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}; "
            "drop an alpha channel with image[..., :3]."
        )
    return image


def corrupt(image: Image.Image | np.ndarray, name: str, severity: int, seed: int | None = None) -> np.ndarray:
    """Apply ImageNet-C corruption ``name`` at ``severity`` (1-5) and return a uint8 ``(H, W, 3)`` RGB array.

    The output has the input's height and width; float results are clipped to [0, 255] and truncated to
    uint8, as in the ImageNet-C generation code. With a ``seed``, numpy's global RNG (which corrupt-tta uses)
    is seeded for the call and restored afterwards, so results are reproducible; this is not thread-safe.
    ``impulse_noise`` cannot be seeded (corrupt-tta draws it from a fresh OS-seeded generator) and warns.

    Args:
        image: PIL image (any mode; converted to RGB) or uint8 array of shape ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
        name: One of `CORRUPTIONS`.
        severity: Integer strength from 1 (mild) to 5 (severe).
        seed: Seed for the corruption's randomness; ``None`` uses numpy's global RNG as it is.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption {name!r}; valid names are: {', '.join(CORRUPTIONS)}.")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"`severity` must be an integer from 1 to 5, got {severity!r}.")
    rgb = _as_rgb_array(image)
    function = _corrupt_tta().corruption_dict[name]
    if seed is None:
        out = function(rgb, int(severity))
    else:
        if name in _UNSEEDABLE:
            warnings.warn(
                f"corrupt-tta's {name} cannot be seeded; `seed` is ignored.", UserWarning, stacklevel=2
            )
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            out = function(rgb, int(severity))
        finally:
            np.random.set_state(saved)
    out = np.clip(np.asarray(out), 0, 255).astype(np.uint8)
    if out.shape != rgb.shape:
        raise RuntimeError(
            f"corrupt-tta's {name} returned shape {out.shape} for an input of shape {rgb.shape}."
        )
    return out


class CorruptionTransform:
    """A transform for uint8 (3, H, W) tensors that applies one corruption, deterministically per image.

    The seed of each image is derived from its pixels, so a data set corrupts the same way in every run and
    in every DataLoader worker.
    """

    def __init__(self, name: str, severity: int) -> None:
        corrupt(
            np.zeros((8, 8, 3), dtype=np.uint8), name, severity
        )  # validates, and fails early without the extra
        self.name = name
        self.severity = severity

    def __call__(self, image):
        import torch

        array = image.permute(1, 2, 0).numpy()
        seed = zlib.crc32(array.tobytes())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # impulse_noise's "cannot be seeded"
            out = corrupt(array, self.name, self.severity, seed=seed)
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, severity={self.severity})"
