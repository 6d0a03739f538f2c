"""Torch and ONNX Runtime backends give the LightningModule's probabilities; the ONNX export is cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import torch

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.checkpoint import load_for_inference, read_checkpoint
from imagenette_drift.data import read_image
from imagenette_drift.hardware import cpu_flags
from imagenette_drift.models import ImagenetteClassifier
from imagenette_drift.serve.runtime import (
    OnnxRuntime,
    TorchRuntime,
    choose_runtime,
    create_runtime,
    fold_batchnorm,
)
from tests.serve._server import ServeProcess
from tests.serve.test_http import assert_matches, predict_file

pytestmark = pytest.mark.slow  # the session's trained checkpoint (and servers)


@pytest.fixture(scope="module")
def module_probs(trained_checkpoint: Path, inference_model, val_images):
    """(uint8 batch after the eval transform, the LightningModule's probabilities) for 8 real images."""
    module = ImagenetteClassifier.load_from_checkpoint(
        trained_checkpoint, map_location="cpu", weights_only=True
    )
    module.eval()
    images = torch.stack([inference_model.transform(read_image(path)) for path in val_images[::5]])
    with torch.inference_mode():
        probs = module.predict_step((images, torch.full((len(images),), -1)), 0)["probs"]
    return images, probs


def test_torch_runtime_matches_the_module(inference_model, module_probs) -> None:
    images, expected = module_probs
    features, probs = TorchRuntime(inference_model)(images)
    torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=0, atol=1e-4)
    assert features.shape == (len(images), inference_model.net.backbone.num_features)


def test_batchnorm_is_folded_into_every_conv_it_follows(inference_model, module_probs) -> None:
    images, _ = module_probs
    norms = [m for m in inference_model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    folded, count = fold_batchnorm(inference_model.net)
    assert count == len(norms) == 20  # ResNet-18: stem, 16 in the blocks, 3 downsamples
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in inference_model.net.modules())  # a copy
    with torch.inference_mode():
        torch.testing.assert_close(folded(images), inference_model.net(images), rtol=0, atol=1e-4)


def test_bf16_runtime_stays_close_to_the_module(inference_model, module_probs) -> None:
    images, expected = module_probs
    features, probs = TorchRuntime(inference_model, bf16=True)(images)
    assert features.dtype == probs.dtype == "float32"
    torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=0, atol=2e-2)


def test_onnx_runtime_matches_the_module_and_reuses_its_export(
    inference_model, module_probs, tmp_path
) -> None:
    images, expected = module_probs
    runtime = OnnxRuntime(inference_model, tmp_path, threads=1)
    assert runtime.path == tmp_path / "onnx" / f"{inference_model.sha256}-tta0.onnx"
    features, probs = runtime(images)
    torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=0, atol=1e-3)
    reference_features, _ = TorchRuntime(inference_model)(images)
    torch.testing.assert_close(
        torch.from_numpy(features), torch.from_numpy(reference_features), rtol=0, atol=1e-3
    )
    exported_at = runtime.path.stat().st_mtime_ns
    OnnxRuntime(inference_model, tmp_path, threads=1)
    assert runtime.path.stat().st_mtime_ns == exported_at  # cached by checkpoint sha256, not re-exported


@pytest.mark.slow
def test_onnx_server_without_a_drift_reference(
    trained_checkpoint: Path, tmp_path: Path, val_images, inference_model
):
    checkpoint = read_checkpoint(trained_checkpoint)
    checkpoint[CHECKPOINT_KEY]["drift"] = None
    no_drift = tmp_path / "no_drift.ckpt"
    torch.save(checkpoint, no_drift)
    args = ("--runtime", "onnx", "--cache_dir", str(tmp_path / "cache"))
    with ServeProcess(no_drift, tmp_path / "server.log", *args) as server:
        assert requests.get(f"{server.url}/info", timeout=5).json()["serving"]["runtime"] == "onnx"
        for path in val_images[:3]:
            reply = predict_file(server.url, path.read_bytes())
            expected = inference_model.predict_proba(inference_model.transform(read_image(path))[None])[0]
            assert_matches(reply.json(), expected, list(inference_model.card.wnids), atol=1e-3)
        drift = requests.get(f"{server.url}/drift", params={"wait_s": 30}, timeout=40).json()
        assert drift["enabled"] is False and "no drift reference" in drift["reason"]
        assert drift["images_seen"] == 3 and drift["statistic"] is None and drift["window_size"] is None


@pytest.mark.slow
def test_a_tta_checkpoint_is_served_with_the_flip_unless_no_tta(
    trained_checkpoint: Path, tmp_path: Path, val_images, inference_model
) -> None:
    checkpoint = read_checkpoint(trained_checkpoint)
    checkpoint[CHECKPOINT_KEY]["tta_flip"] = True
    tta_checkpoint = tmp_path / "tta.ckpt"
    torch.save(checkpoint, tta_checkpoint)
    tta_model = load_for_inference(tta_checkpoint)
    paths = val_images[:3]
    images = torch.stack([inference_model.transform(read_image(path)) for path in paths])
    with_flip = tta_model.predict_proba(images)
    without_flip = inference_model.predict_proba(images)
    assert not torch.allclose(with_flip, without_flip, rtol=0, atol=1e-4)  # the flip changes the answer
    _, served = create_runtime("torch", tta_model, tmp_path, threads=1)(images)  # the default keeps it
    torch.testing.assert_close(torch.from_numpy(served), with_flip, rtol=0, atol=1e-4)

    with ServeProcess(tta_checkpoint, tmp_path / "server.log", "--no_tta", "--runtime", "torch") as server:
        assert requests.get(f"{server.url}/info", timeout=5).json()["serving"]["tta_flip"] is False
        wnids = list(inference_model.card.wnids)
        for path, expected in zip(paths, without_flip, strict=True):
            assert_matches(predict_file(server.url, path.read_bytes()).json(), expected, wnids, atol=1e-4)


@pytest.mark.slow
def test_the_default_server_runs_and_reports_the_runtime_auto_chose(
    trained_checkpoint: Path, tmp_path: Path, val_images, inference_model
) -> None:
    name, reason = choose_runtime("auto")
    if not torch.cuda.is_available():
        assert (name == "bf16") == bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    with ServeProcess(trained_checkpoint, tmp_path / "server.log", "--cache_dir", str(tmp_path)) as server:
        serving = requests.get(f"{server.url}/info", timeout=5).json()["serving"]
        assert serving["runtime"] == name and serving["runtime_reason"] == reason
        for path in val_images[:3]:
            expected = inference_model.predict_proba(inference_model.transform(read_image(path))[None])[0]
            atol = 2e-2 if name == "bf16" else 1e-3  # bf16's tolerance, as in test_bf16_runtime_stays_close
            assert_matches(
                predict_file(server.url, path.read_bytes()).json(),
                expected,
                list(inference_model.card.wnids),
                atol,
            )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runtime_matches_the_module(inference_model, module_probs) -> None:
    images, expected = module_probs
    _, probs = create_runtime("cuda", inference_model, Path("."), threads=1)(images)
    torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=0, atol=1e-3)
