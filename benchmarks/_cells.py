"""The shifted cells of the estimation benchmark, built once and cached: corrupted images, then model outputs.

A cell is one split (the held-out split carved from train, or the official val split: the test set) under one
shift: ``clean``, an ImageNet-C corruption at a severity (``fog-3``), or one of our own shifts that are not
ImageNet-C (``rotate-45``, kept out of any fitting). Images pass the eval transform first (short side to the
card's ``image_size``, centre crop) and are shifted after it, as ImageNet-C corrupts the crop a model sees.

Stage 1 (`build_images`) needs no model: uint8 ``(N, 3, S, S)`` arrays, one ``.npy`` per cell. Stage 2
(`cell_outputs`) runs the model once per cell and caches ``(logits (N, C) float32, embeddings (N, D)
float16)``, so every estimator is computed from the cache without another forward pass.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _outputs import heldout_and_test, subset

from imagenette_drift.corruptions import CORRUPTIONS, CorruptionTransform
from imagenette_drift.data import read_image
from imagenette_drift.data.images import build_eval_transform
from imagenette_drift.data.layout import Split

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
FAMILY_OF = {c: f for f, names in FAMILIES.items() for c in names}


def _rotate(degrees: float) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms.v2 import functional as F

    return lambda x: F.rotate(x, degrees, interpolation=F.InterpolationMode.BILINEAR)


def _zoom(fraction: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Centre crop of `fraction` of the side, resized back: the object fills more of the frame."""
    from torchvision.transforms.v2 import functional as F

    def shift(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        crop = F.center_crop(x, [round(size * fraction)] * 2)
        return F.resize(crop, [size, size], antialias=True)

    return shift


def _colour_temperature(red: float, blue: float) -> Callable[[torch.Tensor], torch.Tensor]:
    gains = torch.tensor([red, 1.0, blue]).view(3, 1, 1)
    return lambda x: (x.float() * gains).clamp(0, 255).to(torch.uint8)


def _low_resolution(pixels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Down to `pixels` a side (antialiased) and back up: a small or distant camera."""
    from torchvision.transforms.v2 import functional as F

    def shift(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        return F.resize(F.resize(x, [pixels, pixels], antialias=True), [size, size], antialias=True)

    return shift


def _jpeg(quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def shift(x: torch.Tensor) -> torch.Tensor:
        buffer = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
        return torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB"))).permute(2, 0, 1).contiguous()

    return shift


# Shifts that are not ImageNet-C's, for scoring only (never used to fit anything).
OWN_SHIFTS: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
    "rotate-20": lambda: _rotate(20),
    "rotate-90": lambda: _rotate(90),
    "zoom-60": lambda: _zoom(0.6),
    "zoom-35": lambda: _zoom(0.35),
    "warm-light": lambda: _colour_temperature(1.25, 0.75),
    "cold-light": lambda: _colour_temperature(0.7, 1.3),
    "lowres-64": lambda: _low_resolution(64),
    "lowres-32": lambda: _low_resolution(32),
    "jpeg-q4": lambda: _jpeg(4),
    "jpeg-q2": lambda: _jpeg(2),
}


def corruption_cells(corruptions=CORRUPTIONS, severities=(1, 2, 3, 4, 5)) -> list[str]:
    return [f"{c}-{s}" for c in corruptions for s in severities]


def _shift(cell: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if cell == "clean":
        return None
    if cell in OWN_SHIFTS:
        return OWN_SHIFTS[cell]()
    name, severity = cell.rsplit("-", 1)
    return CorruptionTransform(name, int(severity))


def build_images(split: Split, cell: str, image_size: int, path: Path) -> None:
    """Write the cell's images, uint8 (N, 3, S, S), to `path` (.npy); skip when it exists."""
    if path.exists():
        return
    transform, shift = build_eval_transform(image_size), _shift(cell)
    out = np.empty((len(split), 3, image_size, image_size), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, file in enumerate(split.paths):
            image = transform(read_image(file))
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            out[i] = (image if shift is None else shift(image)).numpy()
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.rename(path)


@torch.inference_mode()
def cell_outputs(model, images: np.ndarray, batch_size: int = 100, bf16: bool = True):
    """(logits (N, C) float32, embeddings (N, D) float16) of cached uint8 images, as the server computes them."""
    logits, embeddings = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features, out = model.net.embed_and_logits(batch, model.card.tta_flip)
        logits.append(out.float())
        embeddings.append(features.half())
    return torch.cat(logits), torch.cat(embeddings)


def claim(path: Path) -> bool:
    """Claim a cell for this process (a lock file next to it), so several processes share one list of cells."""
    try:
        os.close(os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def main() -> None:
    """Build every cell's images (stage 1); run one process per core, they share the work through lock files."""
    parser = argparse.ArgumentParser(description="Build the estimation benchmark's shifted images, once.")
    parser.add_argument("--data.root", dest="data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder of the cached cells")
    parser.add_argument("--image-size", type=int, default=176, help="the card's eval image_size")
    parser.add_argument("--limit", type=int, default=200, help="val (test) images per cell")
    parser.add_argument(
        "--meta-severities", nargs="+", type=int, default=[1, 3, 5], help="severities of the meta-set cells"
    )
    parser.add_argument(
        "--heldout-limit", type=int, default=100, help="held-out images per shifted cell (meta-sets)"
    )
    args = parser.parse_args()
    heldout, test = heldout_and_test(args.data)
    # The clean held-out split is whole: the estimators are fitted on it as at the end of `imagenette fit`.
    splits = {
        "test": subset(test, args.limit),
        "heldout": heldout,
        "meta": subset(heldout, args.heldout_limit),
    }
    cells = {
        "test": ["clean", *corruption_cells(), *OWN_SHIFTS],
        "heldout": ["clean"],
        "meta": corruption_cells(severities=args.meta_severities),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        index = {"paths": [str(p) for p in images.paths], "labels": list(images.labels)}
        (args.out / f"{split}.json").write_text(json.dumps(index))
    # Slow cells first, so the processes finish together.
    order = [(s, c) for s in splits for c in cells[s]]
    order.sort(key=lambda sc: "glass" not in sc[1])
    for split, cell in order:
        path = args.out / split / f"{cell}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or not claim(path):
            continue
        start = time.perf_counter()
        build_images(splits[split], cell, args.image_size, path)
        print(f"{split}/{cell}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
