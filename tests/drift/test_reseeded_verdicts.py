"""Reordering the same images into other windows (another `--seed`) changes no verdict of `imagenette drift`:
the verdicts the suite asserts are far from the decision threshold, not an accident of one window split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imagenette_drift.cli import cli_main
from tests.conftest import import_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.full_data]

PER_CLASS = 20  # 200 official val images: 4 windows of 50, each tested with MMD, KS, chi-squared and inputs


@pytest.fixture(scope="module")
def val_folder(full_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first `PER_CLASS` official val images of each class (never seen in training), linked in one folder."""
    folder = tmp_path_factory.mktemp("val-200")
    for class_dir in sorted((full_root / "val").iterdir()):
        for path in sorted(class_dir.glob("*.JPEG"))[:PER_CLASS]:
            os.symlink(path, folder / path.name)
    return folder


def _verdicts(checkpoint: Path, folder: Path, out: Path, seed: int, *extra: str) -> dict:
    cli_main(
        [
            "drift",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_dir={folder}",
            f"--output={out}",
            "--window=50",
            f"--seed={seed}",
            "--threads=1",
            *extra,
        ]
    )
    report = json.loads((out / "drift_report.json").read_text())
    assert report["n_images"] == 10 * PER_CLASS and report["n_windows"] == 4
    return report


@pytest.mark.parametrize(
    ("corruption", "drift"), [(None, False), ("gaussian_noise", True)], ids=["clean", "gaussian_noise-3"]
)
def test_another_window_shuffle_gives_the_same_verdicts(
    full_epoch_checkpoint: Path, val_folder: Path, tmp_path: Path, corruption: str | None, drift: bool
) -> None:
    extra = () if corruption is None else (f"--data.corruption={corruption}", "--data.severity=3")
    if corruption is not None:
        import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    reports = [
        _verdicts(full_epoch_checkpoint, val_folder, tmp_path / f"seed{s}", s, *extra) for s in (0, 1, 2)
    ]
    for report in reports:
        assert report["drift"] is drift
        fractions = {name: m["flagged_fraction"] for name, m in report["methods"].items()}
        if drift:  # every window of noisy images is flagged by the embedding and the pixel statistics
            assert fractions["mmd"] == 1.0 and fractions["inputs"] == 1.0, fractions
        else:  # clean windows: no test flags more than half (chance alone: 3 of 4 windows at alpha, ~5e-4)
            assert max(fractions.values()) <= 0.5, fractions
    # The same images in another order: the same predictions, so the same label counts.
    assert len({json.dumps(r["predicted_classes"], sort_keys=True) for r in reports}) == 1
