"""`imagenette drift` on the shipped sample, clean and corrupted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagenette_drift.cli import cli_main
from tests.conftest import import_or_fail

pytestmark = pytest.mark.slow


def _drift(checkpoint: Path, out: Path, *extra: str) -> dict:
    cli_main(["drift", f"--ckpt_path={checkpoint}", f"--output={out}", "--window=20", "--threads=2", *extra])
    return json.loads((out / "drift_report.json").read_text())


def test_drift_command_on_clean_and_corrupted_images(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    clean = _drift(trained_checkpoint, tmp_path / "clean", f"--data.predict_dir={sample_root / 'val'}")
    printed = capsys.readouterr().out
    assert "mmd" in printed and "drift_report.json" in printed
    assert clean["n_images"] == 40 and clean["n_windows"] == 2
    assert clean["source"]["corruption"] is None
    assert (tmp_path / "clean" / "drift_report.png").stat().st_size > 0

    noisy = _drift(
        trained_checkpoint,
        tmp_path / "noisy",
        f"--data.predict_dir={sample_root / 'val'}",
        "--data.corruption=gaussian_noise",
        "--data.severity=5",
    )
    assert noisy["source"] == {**clean["source"], "corruption": "gaussian_noise", "severity": 5}
    # Heavy noise moves the embeddings away from the reference and is plain in the pixel statistics.
    assert noisy["methods"]["mmd"]["median_p_value"] <= clean["methods"]["mmd"]["median_p_value"]
    assert noisy["methods"]["inputs"]["flagged_fraction"] == 1.0

    # Mild JPEG compression: invisible to the classifier by design, caught by the input statistics.
    jpeg = _drift(
        trained_checkpoint,
        tmp_path / "jpeg",
        f"--data.predict_dir={sample_root / 'val'}",
        "--data.corruption=jpeg_compression",
        "--data.severity=1",
    )
    assert jpeg["methods"]["inputs"]["flagged_fraction"] == 1.0


def test_drift_command_accepts_any_folder_and_limit(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "uploads" / "day1"
    folder.mkdir(parents=True)
    for i, src in enumerate(sorted(sample_root.rglob("*.JPEG"))[:30]):
        (folder / f"{i}.jpg").write_bytes(src.read_bytes())
    summary = _drift(
        trained_checkpoint, tmp_path / "out", f"--data.predict_dir={tmp_path / 'uploads'}", "--limit=25"
    )
    assert summary["n_images"] == 25 and summary["n_windows"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ckpt_path=missing.ckpt"], "does not exist"),
        (["--data.corruption=sunburn"], "not one of"),
        (["--data.predict_dir=/nonexistent/folder"], "--data.predict_dir"),
    ],
)
def test_drift_command_errors_name_the_problem(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    argv = ["drift", f"--ckpt_path={trained_checkpoint}", f"--output={tmp_path}", *args]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_drift_report_estimates_accuracy_and_names_fog(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    fog = _drift(
        trained_checkpoint,
        tmp_path / "fog",
        f"--data.predict_dir={sample_root / 'val'}",
        "--data.corruption=fog",
        "--data.severity=5",
        "--harm-drop=1",
        "--harm-windows=1",
    )
    printed = capsys.readouterr().out
    assert "estimated accuracy" in printed and "looks like: fog" in printed
    accuracy = fog["accuracy"]
    assert set(accuracy["methods"]) == {"atc_mc", "atc_ne", "ac", "doc"}
    for row in fog["windows"]:
        assert row["acc_atc_mc_lower"] <= row["acc_atc_mc"] <= row["acc_atc_mc_upper"]
    assert len(fog["explanations"]) == fog["n_windows"]  # every window drifts
    for explanation in fog["explanations"]:
        assert "fog" in [m["corruption"] for m in explanation["signatures"]]
        assert explanation["looks_like"][0] == "fog"
        witness = explanation["witnesses"][0]
        assert Path(witness["path"]).is_file() and witness["nearest_reference_path"].startswith("train/")
