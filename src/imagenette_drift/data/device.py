"""Decoded images kept on the accelerator, with random-resized crops and flips cut there in whole batches.

The data path of `ImagenetteDataModule(device_data=True)`: every image of a split is decoded once into one flat
uint8 tensor on the training device (about 1 GB for Imagenette-160's train folder), and each batch is gathered
and resampled on the device by `resample`, so a GPU never waits for loader workers. Crop boxes follow
torchvision's `RandomResizedCrop.get_params` (Szegedy et al. 2015, "Going deeper with convolutions"; 10 tries,
then a centre crop), and resampling is the antialiased bilinear (triangle) filter of PIL and torchvision's
`resize(..., antialias=True)`, so the batches match the CPU path's transforms up to rounding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from imagenette_drift.data.cache import DecodedImageStore
from imagenette_drift.data.images import read_image_shrunk


class DeviceImages:
    """Images of one folder as one flat uint8 tensor on a device, each (3, H, W) contiguous at `offsets[i]`.

    Attributes (all on `device`): `pixels` uint8 (sum of 3*H*W,), `offsets` int64 (N,), `heights` and
    `widths` int64 (N,). Build with `from_store` (a `DecodedImageStore` memmap: one copy, no decoding) or
    `decode` (JPEGs decoded by a thread pool).
    """

    def __init__(self, pixels: torch.Tensor, shapes: np.ndarray, device: torch.device | str) -> None:
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        if len(shapes) and (shapes[:, 0] != 3).any():
            raise ValueError("DeviceImages needs 3-channel (RGB) images; decode with read_image.")
        sizes = shapes.prod(axis=1)
        if int(sizes.sum()) != pixels.numel():
            raise ValueError(f"{pixels.numel()} pixels given, the shapes need {int(sizes.sum())}.")
        self.device = torch.device(device)
        self.pixels = pixels.to(self.device, non_blocking=False)
        self.offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(sizes)[:-1]]), device=self.device)
        self.heights = torch.as_tensor(shapes[:, 1], device=self.device)
        self.widths = torch.as_tensor(shapes[:, 2], device=self.device)

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def from_store(cls, store: DecodedImageStore, device: torch.device | str) -> DeviceImages:
        """Copy a decoded cache (its memmap file, as it is on disk) to `device`."""
        flat = torch.from_numpy(np.fromfile(store.data_path, dtype=np.uint8, count=store.nbytes))
        return cls(flat, store.shapes, device)

    @classmethod
    def decode(
        cls,
        paths: Sequence[Path],
        device: torch.device | str,
        short_side: int = 160,
        workers: int | None = None,
    ) -> DeviceImages:
        """Decode `paths` (PIL, `workers` threads; default: one per CPU core) and copy them to `device`."""
        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(lambda p: read_image_shrunk(Path(p), short_side), paths))
        flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays]))
        return cls(flat, np.asarray([a.shape for a in arrays]), device)


def random_resized_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> torch.Tensor:
    """Crop boxes (top, left, height, width) int64 (N, 4) of `RandomResizedCrop`, for N images at once.

    As torchvision's `get_params`: area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`,
    the first of `tries` draws that fits the image; images where none fits get the centre crop with the
    ratio clamped to `ratio`.
    """
    n, device = len(heights), heights.device
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]

    def uniform(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return low + (high - low) * u

    area = h_img * w_img * uniform(scale[0], scale[1], (n, tries))
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # first try that fits (0 if none)
    ok = fits.gather(1, first)[:, 0]
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    top = torch.floor(uniform(0.0, 1.0, (n,)) * (h_img[:, 0] - h + 1))
    left = torch.floor(uniform(0.0, 1.0, (n,)) * (w_img[:, 0] - w + 1))
    # Fallback (no try fitted): the whole image, cropped to the nearest allowed aspect ratio, centred.
    in_ratio = w_img[:, 0] / h_img[:, 0]
    fw = torch.where(in_ratio < ratio[0], w_img[:, 0], torch.round(h_img[:, 0] * ratio[1]))
    fh = torch.where(in_ratio < ratio[0], torch.round(w_img[:, 0] / ratio[0]), h_img[:, 0])
    inside = (in_ratio >= ratio[0]) & (in_ratio <= ratio[1])
    fw, fh = torch.where(inside, w_img[:, 0], fw), torch.where(inside, h_img[:, 0], fh)
    ftop, fleft = torch.floor((h_img[:, 0] - fh) / 2), torch.floor((w_img[:, 0] - fw) / 2)
    boxes = torch.stack(
        [
            torch.where(ok, top, ftop),
            torch.where(ok, left, fleft),
            torch.where(ok, h, fh),
            torch.where(ok, w, fw),
        ],
        dim=1,
    )
    return boxes.long()


def resize_taps(
    lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, size: int, taps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source pixels int64 (N, size, taps) and weights float32 (N, size, taps) of a 1-D antialiased resize.

    Output pixel `o` of image `n` is centred at source position `lo + (o + shift + 0.5) * scale` and reads
    pixels in `[lo, hi)` with the triangle filter of half-width max(1, scale) that PIL's BILINEAR resize and
    torchvision's `resize(antialias=True)` use (weights normalised over the pixels inside). All inputs are
    float64 or int64 (N,); `taps` must be at least `2 * ceil(max(1, scale)) + 1`.
    """
    lo, hi = lo.double()[:, None, None], hi.double()[:, None, None]
    scale, shift = scale.double()[:, None, None], shift.double()[:, None, None]
    support = torch.clamp(scale, min=1.0)
    out = torch.arange(size, device=lo.device, dtype=torch.float64)[None, :, None]
    center = lo + (out + shift + 0.5) * scale
    first = torch.maximum(torch.floor(center - support + 0.5), lo)
    last = torch.minimum(torch.floor(center + support + 0.5), hi)  # exclusive
    index = first + torch.arange(taps, device=lo.device, dtype=torch.float64)
    weight = torch.clamp(1.0 - torch.abs((index - center + 0.5) / support), min=0.0)
    weight = torch.where(index < last, weight, 0.0)
    weight = weight / weight.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.minimum(index, hi - 1).long(), weight.float()


def _taps_needed(scale: torch.Tensor) -> int:
    return 2 * math.ceil(max(1.0, float(scale.max()))) + 1 if len(scale) else 3


def crop_taps(boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Taps (rows, row weights, columns, column weights) that resize each box (top, left, h, w) to `size`.

    As torchvision's `resized_crop`: the crop is cut first, so the filter never reads outside the box.
    """
    top, left, h, w = boxes.unbind(1)
    zero = torch.zeros_like(top, dtype=torch.float64)
    scale_h, scale_w = h.double() / size, w.double() / size
    taps = _taps_needed(torch.cat([scale_h, scale_w]))
    rows = resize_taps(top, top + h, scale_h, zero, size, taps)
    cols = resize_taps(left, left + w, scale_w, zero, size, taps)
    return (*rows, *cols)


def center_crop_taps(heights: torch.Tensor, widths: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Taps of the eval transform, `Resize(size)` (short side) then `CenterCrop(size)`, as torchvision does it.

    The resized long side is `int(size * long / short)` and the crop starts at `round((resized - size) / 2)`,
    both as in torchvision, so the result matches `build_eval_transform` up to rounding.
    """
    short = torch.minimum(heights, widths)
    resized_h = torch.where(heights == short, size, (size * heights.double() / short).floor().long())
    resized_w = torch.where(widths == short, size, (size * widths.double() / short).floor().long())
    shift_h = torch.round((resized_h - size).double() / 2)
    shift_w = torch.round((resized_w - size).double() / 2)
    scale_h, scale_w = heights.double() / resized_h, widths.double() / resized_w
    taps = _taps_needed(torch.cat([scale_h, scale_w]))
    zero = torch.zeros_like(heights)
    rows = resize_taps(zero, heights, scale_h, shift_h, size, taps)
    cols = resize_taps(zero, widths, scale_w, shift_w, size, taps)
    return (*rows, *cols)


def resample(
    images: DeviceImages,
    index: torch.Tensor,
    taps: Sequence[torch.Tensor],
    span: int,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Separable resampling of images `index` with `taps` (from `crop_taps` / `center_crop_taps`).

    Args:
        images: the decoded images on the device.
        index: int64 (N,) image numbers.
        taps: (rows, row weights, columns, column weights), each (N, S, K).
        span: at least the number of source columns any image's column taps cover (last - first + 1).
        flip: optional bool (N,): mirror these outputs left-right.
    Returns uint8 (N, 3, S, S), channels_last, on the images' device.
    """
    rows, row_weight, cols, col_weight = taps
    n, size = rows.shape[:2]
    device = images.device
    if flip is not None:  # mirrored output columns = the crop flipped after resizing
        f = flip[:, None, None]
        cols = torch.where(f, torch.flip(cols, dims=[1]), cols)
        col_weight = torch.where(f, torch.flip(col_weight, dims=[1]), col_weight)
    img_w, offset = images.widths[index], images.offsets[index]
    plane = images.heights[index] * img_w
    first_col = cols[:, 0, 0] if flip is None else cols.amin(dim=(1, 2))
    # Rows first, over the `span` source columns from each image's first used column: (N, 3, S, span).
    col_range = torch.minimum(first_col[:, None] + torch.arange(span, device=device), (img_w - 1)[:, None])
    base = offset[:, None] + torch.arange(3, device=device)[None, :] * plane[:, None]  # (N, 3)
    src = (
        base[:, :, None, None, None]
        + rows[:, None, :, :, None] * img_w[:, None, None, None, None]
        + col_range[:, None, None, None, :]
    )  # (N, 3, S, Ky, span)
    tall = (images.pixels[src].float() * row_weight[:, None, :, :, None]).sum(dim=3)
    # Then columns: Kx source columns for each output pixel -> (N, 3, S, S).
    local = (cols - first_col[:, None, None]).reshape(n, 1, 1, -1).expand(n, 3, size, -1)
    wide = tall.gather(3, local).view(n, 3, size, size, -1)
    out = (wide * col_weight[:, None, None, :, :]).sum(dim=-1)
    return out.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)


def column_span(cols: torch.Tensor) -> int:
    """The `span` that `resample` needs for column taps `cols` (N, S, K): one device sync."""
    return int((cols.amax(dim=(1, 2)) - cols.amin(dim=(1, 2))).max()) + 1 if len(cols) else 1


class DeviceBatches:
    """Batches `(uint8 images (B, 3, S, S), int64 labels (B,))` cut on the device, one pass per `iter()`.

    Training (`train=True`): a fresh permutation and fresh `random_resized_boxes` + flips every pass, full
    batches only; S is `size()` read at the start of each pass (progressive resizing). Evaluation: every
    image in order, centre crop. With several processes (DDP) each takes every `world_size`-th image of the
    shared permutation. `len()` is the number of batches per pass.
    """

    def __init__(
        self,
        images: DeviceImages,
        image_index: Sequence[int],
        labels: Sequence[int],
        batch_size: int,
        size: Callable[[], int],
        train: bool,
        min_scale: float = 0.35,
        hflip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        device = images.device
        self.images = images
        self.index = torch.as_tensor(list(image_index), dtype=torch.long, device=device)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long, device=device)
        self.batch_size = batch_size
        self.size = size
        self.train = train
        self.min_scale = min_scale
        self.hflip = hflip
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.passes = 0

    def _count(self) -> int:
        return len(range(self.rank, len(self.index), self.world_size))

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.train and n > self.batch_size else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.size()
        device = self.images.device
        generator = torch.Generator(device=device).manual_seed(self.seed * 100_003 + self.passes)
        self.passes += 1
        order = torch.arange(len(self.index), device=device)
        if self.train:
            order = torch.randperm(len(self.index), generator=generator, device=device)
        order = order[self.rank :: self.world_size]
        image = self.index[order]
        heights, widths = self.images.heights[image], self.images.widths[image]
        if self.train:
            boxes = random_resized_boxes(heights, widths, (self.min_scale, 1.0), generator=generator)
            taps = crop_taps(boxes, size)
            flips = torch.rand(len(order), generator=generator, device=device) < 0.5 if self.hflip else None
        else:
            taps, flips = center_crop_taps(heights, widths, size), None
        span = column_span(taps[2])  # one sync a pass
        for batch in range(len(self)):
            part = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            flip = flips[part] if flips is not None else None
            crops = resample(self.images, image[part], [t[part] for t in taps], span, flip)
            yield crops, self.labels[order[part]]
