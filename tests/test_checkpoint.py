"""The checkpoint contract: a .ckpt alone rebuilds the model, and loading never unpickles objects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from imagenette_drift.checkpoint import load_for_inference, read_checkpoint
from imagenette_drift.classes import CLASS_NAMES, WNIDS
from imagenette_drift.data import build_eval_transform, read_image
from imagenette_drift.models import ImagenetteClassifier

pytestmark = pytest.mark.slow  # needs the session's trained checkpoint


def _real_batch(sample_root: Path, image_size: int, n: int = 6) -> torch.Tensor:
    transform = build_eval_transform(image_size)
    paths = sorted((sample_root / "val").rglob("*.JPEG"))[:: 40 // n][:n]
    return torch.stack([transform(read_image(p)) for p in paths])


def test_model_card_is_in_the_checkpoint(trained_checkpoint: Path) -> None:
    card = read_checkpoint(trained_checkpoint)["imagenette_drift"]
    assert card["model_name"] == "resnet18"
    assert card["class_names"] == list(CLASS_NAMES) and card["wnids"] == list(WNIDS)
    assert card["image_size"] == 160
    assert card["mean"] == [0.485, 0.456, 0.406] and card["std"] == [0.229, 0.224, 0.225]
    assert "val/acc" in card["metrics"]
    assert "drift" in card


def test_inference_model_gives_the_trained_modules_logits(
    trained_checkpoint: Path, sample_root: Path
) -> None:
    module = ImagenetteClassifier.load_from_checkpoint(
        trained_checkpoint, map_location="cpu", weights_only=True
    )
    module.eval()
    loaded = load_for_inference(trained_checkpoint)
    images = _real_batch(sample_root, loaded.card.image_size)
    with torch.inference_mode():
        expected = module(images)
        actual = loaded.net(images)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    probs = loaded.predict_proba(images)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(images)))
    assert len(loaded.sha256) == 64


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_a_malicious_pickle_is_refused(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["imagenette_drift"]["metrics"] = {"payload": _Exploit(marker)}
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    with pytest.raises(ValueError, match="refuses to unpickle"):
        load_for_inference(evil)
    assert not marker.exists(), "the payload ran: the loader unpickled arbitrary objects"
    torch.load(evil, weights_only=False)  # what an unsafe loader would do: the payload runs
    assert marker.exists()


def test_files_that_are_not_checkpoints_get_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match="imagenette fit"):
        load_for_inference(missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_for_inference(garbage)
    pickled = tmp_path / "pickled.ckpt"
    pickled.write_bytes(b"\x80\x02garbage" * 10)  # a pickle stream torch's weights-only unpickler refuses
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as refused:
        load_for_inference(pickled)
    # One line naming the fault, without torch's advice to load it with weights_only=False.
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).endswith("(corrupt or another format): Unsupported operand 103")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not an imagenette-drift checkpoint"):
        load_for_inference(foreign)


def test_truncated_checkpoint_is_refused(trained_checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(trained_checkpoint.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_for_inference(cut)
