"""Turn a /predict request body (multipart `file` or JSON `{"image": base64}`) into a validated RGB image."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from imagenette_drift.data.images import pil_to_tensor

FILE_FIELD = "file"
JSON_FIELD = "image"


@dataclass(frozen=True)
class RequestError:
    """A client error for one request: its HTTP status and the `detail` the client reads.

    Returned (not raised) by decoding, so one bad request in a dynamic batch fails alone.
    """

    status_code: int
    detail: str


class RequestRejected(Exception):
    """Raised inside decoding; carries the `RequestError` to answer with."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.error = RequestError(status_code, detail)


def request_bytes(payload: Any) -> bytes:
    """The image bytes of a parsed request: a form with a `file` upload, or a JSON object with base64 `image`."""
    if isinstance(payload, Mapping) and hasattr(payload, "multi_items"):  # starlette FormData
        upload = payload.get(FILE_FIELD)
        if upload is None:
            raise RequestRejected(
                422, f"multipart form has no '{FILE_FIELD}' field; send the image as `{FILE_FIELD}`."
            )
        if not hasattr(upload, "file"):
            raise RequestRejected(
                422, f"multipart field '{FILE_FIELD}' must be a file upload, not a text value."
            )
        upload.file.seek(0)
        return upload.file.read()
    if not isinstance(payload, Mapping):
        raise RequestRejected(
            422,
            f'JSON body must be an object like {{"{JSON_FIELD}": "<base64>"}}, got {type(payload).__name__}.',
        )
    if JSON_FIELD not in payload:
        raise RequestRejected(422, f"JSON body has no '{JSON_FIELD}' field (base64-encoded image bytes).")
    encoded = payload[JSON_FIELD]
    if not isinstance(encoded, str):
        raise RequestRejected(
            422, f"JSON field '{JSON_FIELD}' must be a base64 string, got {type(encoded).__name__}."
        )
    return decode_base64(encoded)


def decode_base64(encoded: str) -> bytes:
    """Decode base64 as real tools write it, as browsers' `atob` and MIME decoders do (else a 400).

    Accepted: line-wrapped (GNU `base64` and `base64.encodebytes` at 76 columns, OpenSSL at 64 with CRLF), a
    trailing newline, omitted `=` padding, and a `data:<type>;base64,` URL (RFC 2397). Any other character
    outside the base64 alphabet is still an error.
    """
    if encoded[:5].lower() == "data:":
        header, sep, encoded = encoded.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise RequestRejected(
                400,
                f"JSON field '{JSON_FIELD}' is a data URL but not a base64 one; "
                "send `data:image/jpeg;base64,<base64>` or the bare base64 string.",
            )
    compact = "".join(encoded.split())  # line breaks and spaces (MIME's 76 columns, OpenSSL's 64 + CRLF)
    if len(compact) % 4 in (2, 3):
        compact += "=" * (4 - len(compact) % 4)  # padding omitted, as atob allows
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestRejected(400, f"JSON field '{JSON_FIELD}' is not valid base64: {e}.") from e


def decode_image(data: bytes, max_pixels: int) -> torch.Tensor:
    """Decode image bytes to a uint8 (3, H, W) RGB tensor, refusing non-images, corrupt files and bombs."""
    return open_image(data, max_pixels)[0]


def open_image(data: bytes, max_pixels: int) -> tuple[torch.Tensor, str]:
    """`decode_image` and the file's format as Pillow names it (`JPEG`, `PNG`, ...; `unknown` if it has none)."""
    if not data:
        raise RequestRejected(400, "the image is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise RequestRejected(
                    413,
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                    "(--max_pixels); send a smaller image.",
                )
            image.load()
            return pil_to_tensor(image), image.format or "unknown"
    except RequestRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestRejected(
            413, f"image has too many pixels (a decompression bomb?), over the --max_pixels limit: {e}"
        ) from e
    except UnidentifiedImageError as e:
        raise RequestRejected(400, "the file is not an image in a format Pillow can read.") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise RequestRejected(400, f"the image is corrupt or truncated: {e}.") from e
    except (
        Exception
    ) as e:  # Pillow's decoders raise other kinds too on hostile files; still the client's input
        raise RequestRejected(400, f"the image cannot be decoded ({type(e).__name__}: {e}).") from e
