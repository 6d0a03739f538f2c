"""Request bodies -> RGB tensors, with the 4xx a client gets for each kind of bad input."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.datastructures import FormData, Headers, UploadFile

from imagenette_drift.data.images import pil_to_tensor
from imagenette_drift.serve.decode import RequestRejected, decode_image, request_bytes
from tests.serve.images import png_claiming_size, variants

MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def photo(sample_root: Path) -> Path:
    return sorted((sample_root / "val").rglob("*.JPEG"))[0]


def _status(fn, *args) -> tuple[int, str]:
    with pytest.raises(RequestRejected) as info:
        fn(*args)
    return info.value.error.status_code, info.value.error.detail


def test_every_mode_decodes_to_rgb_uint8(photo: Path) -> None:
    width, height = Image.open(photo).size
    for name, data in variants(photo).items():
        image = decode_image(data, MAX_PIXELS)
        assert image.dtype == torch.uint8 and image.shape[0] == 3, name
        expected = (width, height) if name == "exif_rotated" else (height, width)
        assert tuple(image.shape[1:]) == expected, name


def test_exif_rotation_is_applied_exactly(photo: Path) -> None:
    rgb = Image.open(photo).convert("RGB")
    decoded = decode_image(variants(photo)["exif_rotated"], MAX_PIXELS)
    torch.testing.assert_close(
        decoded, pil_to_tensor(rgb.transpose(Image.Transpose.ROTATE_270)), rtol=0, atol=0
    )


def test_rgba_is_composited_on_white_and_16_bit_is_scaled(photo: Path) -> None:
    gray = np.asarray(Image.open(photo).convert("L"))
    png16 = decode_image(variants(photo)["png16"], MAX_PIXELS)
    assert np.array_equal(png16[0].numpy(), gray)  # 16-bit values / 257 -> the 8-bit original, not clipped
    rgba = decode_image(variants(photo)["rgba"], MAX_PIXELS).float()
    rgb = pil_to_tensor(Image.open(photo).convert("RGB")).float()
    assert (rgba - (rgb * 128 + 255 * 127) / 255).abs().max() <= 1.0


def test_not_an_image_truncated_and_empty_are_400(photo: Path) -> None:
    data = photo.read_bytes()
    assert _status(decode_image, b"plain text, not a picture", MAX_PIXELS)[0] == 400
    status, detail = _status(decode_image, data[: len(data) // 2], MAX_PIXELS)
    assert status == 400 and "truncated" in detail
    assert _status(decode_image, b"", MAX_PIXELS) == (400, "the image is empty (0 bytes).")


def test_too_many_pixels_is_413_before_decoding() -> None:
    status, detail = _status(decode_image, png_claiming_size(4_000, 2_000), MAX_PIXELS)
    assert status == 413 and "8,000,000 pixels" in detail and "--max_pixels" in detail
    status, detail = _status(decode_image, png_claiming_size(50_000, 50_000), 10**12)  # Pillow's own guard
    assert status == 413 and "decompression bomb" in detail


def test_json_and_form_payloads(photo: Path) -> None:
    data = photo.read_bytes()
    assert request_bytes({"image": base64.b64encode(data).decode()}) == data
    assert request_bytes({"image": "data:image/jpeg;base64," + base64.b64encode(data).decode()}) == data
    upload = UploadFile(io.BytesIO(data), filename="x.jpg", headers=Headers({"content-type": "image/jpeg"}))
    assert request_bytes(FormData([("file", upload)])) == data


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({}, 422, "no 'image' field"),
        ({"image": 3}, 422, "must be a base64 string, got int"),
        ([1, 2], 422, "must be an object"),
        ({"image": "not base64 !"}, 400, "not valid base64"),
        (FormData([("other", "x")]), 422, "no 'file' field"),
        (FormData([("file", "just text")]), 422, "must be a file upload"),
    ],
)
def test_bad_payloads_name_the_problem(payload, status: int, words: str) -> None:
    got_status, detail = _status(request_bytes, payload)
    assert got_status == status and words in detail
