"""Real sample images re-encoded in the awkward forms clients send (test helper)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def variants(path: Path) -> dict[str, bytes]:
    """The same photo as grayscale, RGBA, palette, CMYK JPEG, 16-bit PNG and EXIF-rotated PNG."""
    rgb = Image.open(path).convert("RGB")
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    return {
        "jpeg": path.read_bytes(),
        "grayscale": encode(rgb.convert("L"), "PNG"),
        "rgba": encode(rgba, "PNG"),
        "palette": encode(rgb.convert("P"), "PNG"),
        "cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "png16": encode(gray16, "PNG"),
        "exif_rotated": encode(rgb, "PNG", exif=exif),
    }


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims `width` x `height` (a decompression bomb's calling card)."""
    data = encode(Image.new("L", (8, 8)), "PNG")
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
