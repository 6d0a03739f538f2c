"""The REST contract, against a real `imagenette serve` subprocess on loopback."""

from __future__ import annotations

import base64
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch

from imagenette_drift.checkpoint import file_sha256, read_checkpoint
from imagenette_drift.models import ImagenetteClassifier
from imagenette_drift.serve.decode import decode_image
from imagenette_drift.serve_contract import DriftStatus, ModelInfo, PredictionAnswer
from tests.serve.images import png_claiming_size, variants

pytestmark = pytest.mark.slow  # a real server on the session's trained checkpoint

DRIFT_KEYS = set(DriftStatus.model_fields)


def predict_file(url: str, data: bytes, name: str = "image.jpg") -> requests.Response:
    return requests.post(f"{url}/predict", files={"file": (name, data)}, timeout=30)


def predict_json(url: str, data: bytes) -> requests.Response:
    return requests.post(f"{url}/predict", json={"image": base64.b64encode(data).decode()}, timeout=30)


def probs_by_wnid(reply: dict) -> dict[str, float]:
    return {entry["wnid"]: entry["probability"] for entry in reply["top_k"]}


def assert_matches(reply: dict, expected: torch.Tensor, wnids: list[str], atol: float) -> None:
    """The reply's label is the expected argmax and its top-5 probabilities equal the expected ones."""
    top = expected.topk(5)
    assert [entry["wnid"] for entry in reply["top_k"]] == [wnids[i] for i in top.indices]
    assert reply["wnid"] == wnids[int(expected.argmax())] and reply["label"] == reply["top_k"][0]["label"]
    got = torch.tensor([entry["probability"] for entry in reply["top_k"]], dtype=torch.float64)
    torch.testing.assert_close(got, top.values.double(), rtol=0, atol=atol)
    assert reply["confidence"] == reply["top_k"][0]["probability"]


def test_health_and_info(server, trained_checkpoint: Path) -> None:
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    info = requests.get(f"{server.url}/info", timeout=5).json()
    card = read_checkpoint(trained_checkpoint)["imagenette_drift"]
    assert info["model_name"] == card["model_name"] == "resnet18"
    assert info["class_names"] == card["class_names"] and info["wnids"] == card["wnids"]
    assert info["input_size"] == card["image_size"]
    assert info["checkpoint"]["sha256"] == file_sha256(trained_checkpoint)
    assert info["metrics"]["val/acc"] == pytest.approx(card["metrics"]["val/acc"])


def test_the_answers_are_the_contract_published_at_docs(server, val_images) -> None:
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    published = {
        ("/predict", "post"): PredictionAnswer,
        ("/drift", "get"): DriftStatus,
        ("/info", "get"): ModelInfo,
    }
    for (path, method), model in published.items():
        content = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert content["schema"]["$ref"] == f"#/components/schemas/{model.__name__}"
        assert set(schema["components"]["schemas"][model.__name__]["properties"]) == set(model.model_fields)
    answers = {
        PredictionAnswer: predict_file(server.url, val_images[0].read_bytes()).json(),
        DriftStatus: requests.get(f"{server.url}/drift", timeout=10).json(),
        ModelInfo: requests.get(f"{server.url}/info", timeout=10).json(),
    }
    for model, answer in answers.items():
        assert set(answer) == set(model.model_fields)
        assert model.model_validate(answer).model_dump(mode="json") == answer
    docs = requests.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_predictions_equal_the_lightning_modules(
    server, trained_checkpoint: Path, val_images, inference_model
) -> None:
    module = ImagenetteClassifier.load_from_checkpoint(
        trained_checkpoint, map_location="cpu", weights_only=True
    )
    module.eval()
    wnids = list(inference_model.card.wnids)
    for path in val_images[::10]:
        image = inference_model.transform(decode_image(path.read_bytes(), 10**8))
        with torch.inference_mode():
            expected = module.predict_step((image[None], torch.tensor([-1])), 0)["probs"][0]
        for send in (predict_file, predict_json):
            reply = send(server.url, path.read_bytes())
            assert reply.status_code == 200, reply.text
            assert_matches(reply.json(), expected, wnids, atol=1e-4)


def test_every_image_mode_is_answered_like_in_process(server, val_images, inference_model) -> None:
    wnids = list(inference_model.card.wnids)
    for name, data in variants(val_images[3]).items():
        reply = predict_file(server.url, data, f"image.{name}")
        assert reply.status_code == 200, (name, reply.text)
        image = inference_model.transform(decode_image(data, 10**8))
        assert_matches(reply.json(), inference_model.predict_proba(image[None])[0], wnids, atol=1e-4)


def _bad_requests(photo: bytes) -> dict[str, tuple[dict, int, str]]:
    """name -> (requests.post kwargs, expected status, words the detail must contain)."""
    return {
        "text file": ({"files": {"file": ("a.txt", b"hello")}}, 400, "not an image"),
        "truncated jpeg": ({"files": {"file": ("a.jpg", photo[: len(photo) // 2])}}, 400, "truncated"),
        "empty file": ({"files": {"file": ("a.jpg", b"")}}, 400, "empty"),
        "broken json": (
            {"data": b'{"image": ', "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        "bad base64": ({"json": {"image": "%%%"}}, 400, "not valid base64"),
        "broken multipart": (
            {"data": b"--x\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=y"}},
            400,
            "multipart",
        ),
        "text/plain": (
            {"data": photo, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported media type",
        ),
        "image/jpeg body": (
            {"data": photo, "headers": {"content-type": "image/jpeg"}},
            415,
            "multipart/form-data",
        ),
        "no file field": ({"files": {"upload": ("a.jpg", photo)}}, 422, "'file'"),
        "no image key": ({"json": {"img": "x"}}, 422, "'image'"),
        "image not a string": ({"json": {"image": [1, 2]}}, 422, "base64 string"),
        "body over max-bytes": ({"files": {"file": ("a.jpg", b"\xff" * 2_100_000)}}, 413, "--max_bytes"),
        "decompression bomb": (
            {"files": {"file": ("a.png", png_claiming_size(4000, 2000))}},
            413,
            "--max_pixels",
        ),
    }


def test_bad_input_gets_a_4xx_that_says_what_was_wrong(server, val_images) -> None:
    photo = val_images[0].read_bytes()
    for name, (kwargs, status, words) in _bad_requests(photo).items():
        reply = requests.post(f"{server.url}/predict", timeout=30, **kwargs)
        assert reply.status_code == status, (name, reply.status_code, reply.text)
        assert words in reply.json()["detail"], (name, reply.json())
    assert predict_file(server.url, photo).status_code == 200  # and it keeps serving


def test_one_bad_request_in_a_batch_fails_alone(server, val_images, expected_probs, inference_model) -> None:
    wnids = list(inference_model.card.wnids)
    paths = val_images[:6]
    bodies = [path.read_bytes() for path in paths] + [b"not an image", val_images[6].read_bytes()[:500]]
    before = _batch_histogram(server.url)
    start = threading.Barrier(len(bodies))

    def send(data: bytes) -> requests.Response:
        start.wait()
        return predict_file(server.url, data)

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(send, bodies))
    for path, reply in zip(paths, replies[:6], strict=True):
        assert reply.status_code == 200, reply.text
        assert_matches(reply.json(), expected_probs(path), wnids, atol=1e-4)
    assert [reply.status_code for reply in replies[6:]] == [400, 400]
    count, total = (a - b for a, b in zip(_batch_histogram(server.url), before, strict=True))
    assert total == 6 and count < 6  # six good images, in fewer forward passes than requests


def _batch_histogram(url: str) -> tuple[float, float]:
    """(forward passes, images) so far, once every answered request's batch has been counted."""
    requests.get(f"{url}/drift", params={"wait_s": 30}, timeout=40)  # waits on the hub's state, not a clock
    text = requests.get(f"{url}/metrics", timeout=10).text
    count = float(re.search(r"^imagenette_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^imagenette_batch_size_sum (\S+)$", text, re.M).group(1))
    return count, total


def test_drift_reports_the_online_monitor(server, val_images, trained_checkpoint: Path) -> None:
    before = requests.get(f"{server.url}/drift", timeout=10).json()
    assert set(before) == DRIFT_KEYS and before["enabled"] is True
    window = before["window_size"]
    for path in val_images[: window + 2]:
        assert predict_file(server.url, path.read_bytes()).status_code == 200
    after = requests.get(f"{server.url}/drift", params={"wait_s": 30}, timeout=40).json()
    assert after["images_seen"] == before["images_seen"] + window + 2
    assert after["window_filled"] is True
    assert isinstance(after["statistic"], float) and isinstance(after["threshold"], float)
    assert after["drifting"] == (after["drifting_since"] is not None)
    # Label-free accuracy estimates of the latest window, from the card's held-out references; the harm alert
    # and the app read COT, since the card stores the held-out class shares.
    assert set(after["accuracy"]) == {"atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "cot_ls", "nuclear"}
    assert after["estimate_method"] == "cot_ls" and after["estimate_note"] is None
    for estimate in after["accuracy"].values():
        assert 0.0 <= estimate["lower"] <= estimate["estimate"] <= estimate["upper"] <= 1.0
        # over the latest window of the drift reference's size (the tested window of `imagenette drift`)
        reference_window = read_checkpoint(trained_checkpoint)["imagenette_drift"]["drift"]["window_size"]
        assert estimate["n"] == min(reference_window, after["images_seen"])
    assert isinstance(after["harm"], bool) and 0.0 <= after["heldout_accuracy"] <= 1.0


def test_metrics_are_prometheus_text(server, val_images) -> None:
    predict_file(server.url, val_images[0].read_bytes())
    requests.post(f"{server.url}/predict", data=b"x", headers={"content-type": "text/plain"}, timeout=10)
    reply = requests.get(f"{server.url}/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(re.findall(r"^(\S+) (\S+)$", reply.text, re.M))
    assert float(samples['imagenette_requests_total{method="POST",route="/predict",status="200"}']) >= 1
    assert float(samples['imagenette_requests_total{method="POST",route="/predict",status="415"}']) >= 1
    latency_count = float(samples['imagenette_request_duration_seconds_count{route="/predict"}'])
    assert (
        float(samples['imagenette_request_duration_seconds_bucket{le="+Inf",route="/predict"}'])
        == latency_count
    )
    assert samples["imagenette_drift_enabled"] == "1.0"
    drift = requests.get(f"{server.url}/drift", timeout=10).json()
    assert float(samples["imagenette_drift_images_seen"]) <= drift["images_seen"]


def test_predictions_carry_the_familiarity_of_the_image(server, val_images, inference_model) -> None:
    from imagenette_drift.familiarity.reference import FamiliarityReference

    reference = FamiliarityReference.from_state_dict(inference_model.card.familiarity)
    for path in val_images[::13]:
        reply = predict_file(server.url, path.read_bytes())
        assert reply.status_code == 200, reply.text
        familiarity = reply.json()["familiarity"]
        assert set(familiarity) == {"knn_distance", "energy", "unfamiliar"}
        image = inference_model.transform(decode_image(path.read_bytes(), 10**8))
        features, _ = inference_model.embed_and_predict(image[None])
        expected = reference.score_json(features)[0]
        assert familiarity["knn_distance"] == pytest.approx(expected["knn_distance"], abs=1e-3)
        assert familiarity["energy"] == pytest.approx(expected["energy"], abs=1e-3)
        assert familiarity["unfamiliar"] == (familiarity["knn_distance"] > reference.knn_threshold)
