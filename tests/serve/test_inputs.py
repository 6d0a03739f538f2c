"""Inputs as real clients send them, on a real server: wrapped base64, media types in any case, thin images,
oversized bodies read by urllib, requests and curl, and generated hostile requests that never get a 5xx."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2

from imagenette_drift.data.images import build_eval_transform, read_image
from imagenette_drift.serve.decode import decode_image
from tests.serve.images import encode
from tests.serve.test_http import assert_matches, predict_file

BIG = (
    16_000_000  # 8x the `server` fixture's --max_bytes of 2,000,000: more than loopback's socket buffers hold
)


@pytest.fixture(scope="module")
def photo(val_images: list[Path]) -> bytes:
    return val_images[7].read_bytes()


def _answer(reply: requests.Response) -> dict:
    """The prediction in a 200 reply, without its per-request id."""
    return {key: value for key, value in reply.json().items() if key != "request_id"}


@pytest.fixture(scope="module")
def photo_reply(server, photo: bytes) -> dict:
    reply = predict_file(server.url, photo)
    assert reply.status_code == 200, reply.text
    return _answer(reply)


def _post_json(url: str, image_field: str) -> requests.Response:
    return requests.post(f"{url}/predict", json={"image": image_field}, timeout=30)


@pytest.mark.slow  # a real server on the session's trained checkpoint
def test_base64_as_real_tools_write_it(server, photo: bytes, photo_reply: dict) -> None:
    plain = base64.b64encode(photo).decode()
    wrapped_64_crlf = "\r\n".join(plain[i : i + 64] for i in range(0, len(plain), 64)) + "\r\n"
    forms = {
        "76 columns (GNU base64, encodebytes)": base64.encodebytes(photo).decode(),
        "64 columns + CRLF (OpenSSL)": wrapped_64_crlf,
        "one trailing newline": plain + "\n",
        "data URL": "data:image/jpeg;base64," + plain,
        "data URL, wrapped": "DATA:image/jpeg;BASE64," + base64.encodebytes(photo).decode(),
        "padding omitted": plain.rstrip("="),
    }
    for name, encoded in forms.items():
        reply = _post_json(server.url, encoded)
        assert reply.status_code == 200, (name, reply.text)
        assert _answer(reply) == photo_reply, name
    garbage = {
        "percent signs": "%%%",
        "a word and a bang": plain[:100] + "!" + plain[100:],
        "one char too many": plain.rstrip("=") + "A" * ((1 - len(plain.rstrip("="))) % 4),
        "data URL not base64": "data:image/jpeg," + plain,
    }
    for name, encoded in garbage.items():
        reply = _post_json(server.url, encoded)
        assert reply.status_code == 400, (name, reply.status_code, reply.text)
        assert "base64" in reply.json()["detail"], (name, reply.json())


@pytest.mark.slow  # a real server on the session's trained checkpoint
def test_media_types_in_any_case(server, photo: bytes, photo_reply: dict) -> None:
    boundary = "AbCdEf0123"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    body_json = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
    for content_type, body in [
        (f"Multipart/Form-Data; boundary={boundary}", form),
        (f"MULTIPART/FORM-DATA; BOUNDARY={boundary}", form),
        (f'multipart/form-data;boundary="{boundary}"', form),
        ("Application/JSON", body_json),
        ("APPLICATION/JSON; charset=UTF-8", body_json),
    ]:
        reply = requests.post(
            f"{server.url}/predict", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert reply.status_code == 200, (content_type, reply.text)
        assert _answer(reply) == photo_reply, content_type


def test_eval_transform_is_unchanged_on_real_images(val_images: list[Path]) -> None:
    """The aspect crop is a no-op for real photos: the transform equals plain resize + centre crop exactly."""
    plain = v2.Compose(
        [v2.Resize(160, interpolation=v2.InterpolationMode.BILINEAR, antialias=True), v2.CenterCrop(160)]
    )
    ours = build_eval_transform(160)
    for path in val_images:
        image = read_image(path)
        assert torch.equal(ours(image), plain(image)), path


_PEAK_MEMORY = """
import resource, sys, torch
from imagenette_drift.data.images import build_eval_transform
torch.set_num_threads(1)
transform = build_eval_transform(176)
image = torch.full((3, int(sys.argv[1]), int(sys.argv[2])), 128, dtype=torch.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = transform(image)
assert out.shape == (3, 176, 176), out.shape
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow  # measures peak memory in a fresh process, a few seconds each
@pytest.mark.parametrize(("height", "width"), [(1, 16000), (16000, 1)])
def test_a_thin_image_costs_its_pixels_not_its_shape(height: int, width: int) -> None:
    """Peak memory of the eval transform on a 1 x 16000 image: kilobytes, not the 176 x 2.8M upscale (1.5 GB)."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(height), str(width)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 50_000, f"peak RSS grew by {int(out.stdout):,} kB"  # ru_maxrss is in kB


THIN = {  # (width, height): both directions, a line of pixels and a strip
    "1 x 16000": (1, 16000),
    "16000 x 1": (16000, 1),
    "3 x 9000": (3, 9000),
    "12000 x 2": (12000, 2),
}


def _thin_png(width: int, height: int) -> bytes:
    rows = torch.arange(height * width * 3, dtype=torch.int64).reshape(height, width, 3) % 251
    return encode(Image.fromarray(rows.to(torch.uint8).numpy(), "RGB"), "PNG")


@pytest.mark.slow  # a real server on the session's trained checkpoint
def test_extreme_aspect_ratios_are_answered_and_do_not_stall_others(
    server, inference_model, val_images: list[Path]
) -> None:
    wnids = list(inference_model.card.wnids)
    pngs = {name: _thin_png(*size) for name, size in THIN.items()}
    for name, data in pngs.items():
        reply = predict_file(server.url, data, "thin.png")
        assert reply.status_code == 200, (name, reply.text)
        expected = inference_model.predict_proba(inference_model.transform(decode_image(data, 10**8))[None])[
            0
        ]
        assert_matches(reply.json(), expected, wnids, atol=1e-4)
    # Thin images and ordinary ones at once: every one answered, the ordinary ones as usual.
    start = threading.Barrier(2 * len(pngs))
    bodies = [(data, "thin.png") for data in pngs.values()]
    bodies += [(path.read_bytes(), "photo.jpg") for path in val_images[: len(pngs)]]

    def send(item: tuple[bytes, str]) -> int:
        start.wait()
        return predict_file(server.url, *item).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(send, bodies)) == [200] * len(bodies)


def _big_multipart() -> tuple[bytes, str]:
    boundary = "big-upload"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'.encode()
        + b"\xff" * BIG
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _assert_413(status: int, body: bytes) -> None:
    assert status == 413, (status, body[:300])
    assert "--max_bytes" in json.loads(body)["detail"]


@pytest.mark.slow  # a real server on the session's trained checkpoint
def test_an_oversized_body_gets_a_413_that_urllib_requests_and_curl_read(server, tmp_path: Path) -> None:
    body, content_type = _big_multipart()
    request = urllib.request.Request(
        f"{server.url}/predict", data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    _assert_413(info.value.code, info.value.read())

    reply = requests.post(f"{server.url}/predict", files={"file": ("big.jpg", b"\xff" * BIG)}, timeout=60)
    _assert_413(reply.status_code, reply.content)
    chunks = (b"\xff" * 100_000 for _ in range(BIG // 100_000))  # chunked: no Content-Length to refuse early
    reply = requests.post(
        f"{server.url}/predict", data=chunks, headers={"Content-Type": content_type}, timeout=60
    )
    _assert_413(reply.status_code, reply.content)

    upload = tmp_path / "big.jpg"
    upload.write_bytes(b"\xff" * BIG)
    for expect in ([], ["-H", "Expect:"]):  # curl's default Expect: 100-continue, and without it
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "-w",
                "\n%{http_code}",
                *expect,
                "-F",
                f"file=@{upload}",
                f"{server.url}/predict",
            ],
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        payload, _, code = out.stdout.rpartition(b"\n")
        _assert_413(int(code), payload)
    assert predict_file(server.url, b"\xff" * 10).status_code == 400  # and it keeps serving


# Generated requests: media types in any case with odd parameters, bodies that are near-misses of valid ones.
_TYPES = st.sampled_from(
    [
        "multipart/form-data",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "image/png",
    ]
)
_FIELDS = st.one_of(st.sampled_from(["file", "image", "FILE", ""]), st.text(max_size=8))


def _any_case(text: str, data: st.DataObject) -> str:
    flags = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flags, strict=True))


@st.composite
def hostile_requests(draw) -> tuple[str, bytes]:
    """(Content-Type header, body) near valid /predict requests."""
    data = draw(st.data())
    media = _any_case(draw(_TYPES), data)
    boundary = draw(st.text(alphabet="abcXYZ019-_'", min_size=0, max_size=12))
    params = draw(
        st.sampled_from(
            [
                "",
                f"; boundary={boundary}",
                f'; boundary="{boundary}"',
                "; charset=utf-16",
                "; charset=nope",
                ";;=",
            ]
        )
    )
    field = draw(_FIELDS)
    content = draw(st.binary(max_size=64))
    kind = draw(st.sampled_from(["raw", "form", "json", "json-any"]))
    if kind == "form":
        name = draw(st.text(max_size=10))
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n\r\n'.encode(
                "utf-8", "surrogatepass"
            )
            + content
            + draw(st.sampled_from([f"\r\n--{boundary}--\r\n".encode(), b"", b"\r\n--"]))
        )
    elif kind == "json":
        encoded = draw(
            st.sampled_from([base64.b64encode(content).decode(), base64.encodebytes(content).decode()])
        )
        encoded = draw(st.sampled_from([encoded, "data:image/png;base64," + encoded, encoded + "!"]))
        body = json.dumps({field: encoded}).encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])))
    elif kind == "json-any":
        value = draw(
            st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=5)
        )
        body = json.dumps({field: value} if draw(st.booleans()) else value).encode()
    else:
        body = content
    return media + params, body


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(sample=hostile_requests())
def test_generated_requests_never_get_a_5xx(server, sample: tuple[str, bytes]) -> None:
    content_type, body = sample
    headers = {"Content-Type": content_type} if content_type else {}
    reply = requests.post(f"{server.url}/predict", data=io.BytesIO(body), headers=headers, timeout=30)
    assert reply.status_code < 500, (content_type, body[:200], reply.status_code, reply.text)
    assert reply.status_code == 200 or reply.json()["detail"], reply.text
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
