"""DriftCallback through the real CLI on the shipped sample: reference in the checkpoint, reports on test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.drift import DriftReference
from tests.conftest import import_or_fail, quickstart_args

pytestmark = pytest.mark.slow


def test_fit_stores_a_reference_fitted_on_the_held_out_split(
    trained_checkpoint: Path, sample_root: Path
) -> None:
    model = load_for_inference(trained_checkpoint)
    assert model.card.drift is not None
    reference = DriftReference.from_state_dict(model.card.drift)
    assert reference.n_reference == 40  # half of the 80 sample train images, four per class
    assert reference.window_size == 20
    assert reference.mmd.reference.dtype == torch.float16 and reference.mmd.reference.shape == (40, 512)
    # The online window is capped by the reference: (40 + 1) // 3 images, so that it can be calibrated.
    assert reference.online is not None and reference.online.window_size == 13
    assert reference.inputs is not None


def test_test_stage_writes_the_drift_report_and_logs_each_window(
    trained_checkpoint: Path, in_tmp: Path
) -> None:
    cli = cli_main(quickstart_args("test", f"--ckpt_path={trained_checkpoint}"))
    report_dir = in_tmp / "outputs" / "quickstart"
    summary = json.loads((report_dir / "drift_report.json").read_text())
    assert summary["stage"] == "test" and summary["n_images"] == 40 and summary["n_windows"] == 2
    assert [w["size"] for w in summary["windows"]] == [20, 20]
    for window in summary["windows"]:
        for method in ("mmd", "ks", "inputs"):
            assert 0.0 < window[f"{method}_p_value"] <= 1.0
            assert window[f"{method}_drift"] == (window[f"{method}_p_value"] < 0.05)
        assert "chi2_p_value" not in window  # 20 images, fewer than 5 per class: no label-shift test
    assert (report_dir / "drift_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    callback = next(c for c in cli.trainer.callbacks if type(c).__name__ == "DriftCallback")
    assert callback.summary == summary


def _assert_same(a: object, b: object, where: str = "drift") -> None:
    """Exact equality of two nested drift states (tensors compared element-wise, bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_resumed_checkpoint_keeps_its_reference(trained_checkpoint: Path, in_tmp: Path) -> None:
    """Resume the fit from its checkpoint for one more epoch, without validation (which would fit a new
    reference on the new weights): the reference comes back from the checkpoint and goes into the next one."""
    start = torch.load(trained_checkpoint, weights_only=True)
    cli = cli_main(
        quickstart_args(
            "fit",
            "--trainer.max_epochs=3",
            "--trainer.limit_val_batches=0",
            f"--ckpt_path={trained_checkpoint}",
        )
    )
    resumed_path = in_tmp / "outputs" / "quickstart" / "checkpoints" / "last.ckpt"
    resumed = torch.load(resumed_path, weights_only=True)
    assert resumed["global_step"] > start["global_step"]  # it did train on from the checkpoint
    assert any(not torch.equal(resumed["state_dict"][k], v) for k, v in start["state_dict"].items())
    assert start["imagenette_drift"]["drift"] is not None
    _assert_same(resumed["imagenette_drift"]["drift"], start["imagenette_drift"]["drift"])
    callback = next(c for c in cli.trainer.callbacks if type(c).__name__ == "DriftCallback")
    x = torch.randn(12, 512, generator=torch.Generator().manual_seed(0))
    loaded = DriftReference.from_state_dict(load_for_inference(resumed_path).card.drift)
    assert callback.reference.mmd.test(x) == loaded.mmd.test(x)


def test_testing_a_corrupted_split_reports_drift(trained_checkpoint: Path, in_tmp: Path) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    cli_main(
        quickstart_args(
            "test",
            f"--ckpt_path={trained_checkpoint}",
            "--data.corruption=gaussian_noise",
            "--data.severity=5",
        )
    )
    summary = json.loads((in_tmp / "outputs" / "quickstart" / "drift_report.json").read_text())
    # The sample's model is barely trained, so its softmax outputs are not a reliable signal here; the pixels are.
    assert summary["drift"] is True
    assert summary["methods"]["inputs"]["flagged_fraction"] == 1.0


def test_fit_stores_estimation_familiarity_and_explanation_in_the_card(trained_checkpoint: Path) -> None:
    from imagenette_drift.corruptions import CORRUPTIONS
    from imagenette_drift.estimation import EstimationReference
    from imagenette_drift.explanation import ExplanationReference
    from imagenette_drift.familiarity import FamiliarityReference

    card = torch.load(trained_checkpoint, weights_only=True)["imagenette_drift"]  # plain data only
    estimation = EstimationReference.from_state_dict(card["estimation"])
    assert estimation.n_heldout == 40 and estimation.temperature > 0
    assert 0.0 <= estimation.heldout_accuracy <= 1.0
    familiarity = FamiliarityReference.from_state_dict(card["familiarity"])
    assert familiarity.bank.dtype == torch.float16 and familiarity.bank.shape == (40, 512)
    assert familiarity.head_weight.shape == (10, 512) and familiarity.energy_threshold is not None
    assert familiarity.bank_paths is not None and all(p.startswith("train/") for p in familiarity.bank_paths)
    explanation = ExplanationReference.from_state_dict(card["explanation"])
    assert int(explanation.confusion.sum()) == 40
    # held-out accuracy in the card is the confusion matrix's trace
    assert estimation.heldout_accuracy == pytest.approx(float(explanation.confusion.trace()) / 40)
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    assert sorted(explanation.signatures) == sorted(CORRUPTIONS)
