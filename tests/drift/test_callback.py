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
    assert reference.n_reference == 10  # 10% of the 80 sample train images, one per class
    assert reference.window_size == 20
    assert reference.mmd.reference.dtype == torch.float16 and reference.mmd.reference.shape == (10, 512)
    assert reference.online is not None and reference.online.window_size == 3  # capped by the tiny reference
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
        for method in ("mmd", "ks", "chi2", "inputs"):
            assert 0.0 < window[f"{method}_p_value"] <= 1.0
            assert window[f"{method}_drift"] == (window[f"{method}_p_value"] < 0.05)
    assert (report_dir / "drift_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    callback = next(c for c in cli.trainer.callbacks if type(c).__name__ == "DriftCallback")
    assert callback.summary == summary


def test_a_resumed_checkpoint_keeps_its_reference(trained_checkpoint: Path) -> None:
    state = torch.load(trained_checkpoint, weights_only=True)["imagenette_drift"]["drift"]
    again = DriftReference.from_state_dict(state)
    first = DriftReference.from_state_dict(state)
    x = torch.randn(12, 512)
    assert again.mmd.test(x) == first.mmd.test(x)


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
