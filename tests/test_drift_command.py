"""`imagenette drift` on the shipped sample, clean and corrupted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.data.images import read_image
from tests.conftest import SAMPLE_ROOT, import_or_fail

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
        (
            [f"--data.predict_dir={SAMPLE_ROOT / 'val'}", "--window=0"],
            "--window 0: a window needs at least 2",
        ),
        (
            [f"--data.predict_dir={SAMPLE_ROOT / 'val'}", "--window=-3"],
            "--window -3: a window needs at least 2",
        ),
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
        "--harm_drop=1",
        "--harm_windows=1",
    )
    printed = capsys.readouterr().out
    assert "estimated accuracy" in printed and "looks like: fog" in printed
    accuracy = fog["accuracy"]
    assert (
        set(accuracy["methods"]) == {"atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "cot_ls", "nuclear"}
        and accuracy["harm_method"] == "cot_ls"
    )
    for row in fog["windows"]:
        assert row["acc_atc_mc_lower"] <= row["acc_atc_mc"] <= row["acc_atc_mc_upper"]
    assert len(fog["explanations"]) == fog["n_windows"]  # every window drifts
    for explanation in fog["explanations"]:
        assert "fog" in [m["corruption"] for m in explanation["signatures"]]
        assert explanation["looks_like"][0] == "fog"
        witness = explanation["witnesses"][0]
        assert Path(witness["path"]).is_file() and witness["nearest_reference_path"].startswith("train/")


def test_drift_report_shows_witness_thumbnails_beside_their_nearest_held_out_images(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path
) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    from imagenette_drift.corruptions import CorruptionTransform

    model = load_for_inference(trained_checkpoint)
    out = tmp_path / "fog"
    fog = _drift(
        trained_checkpoint,
        out,
        f"--data.predict_dir={sample_root / 'val'}",
        "--data.corruption=fog",
        "--data.severity=5",
        f"--reference_root={sample_root}",
    )
    markdown = (out / "drift_report.md").read_text()
    assert fog["explanations"] and "## Why the drifting windows drift" in markdown
    for explanation in fog["explanations"]:
        assert f"### Window {explanation['window']}" in markdown
        assert "fog" in markdown.split(f"### Window {explanation['window']}")[1].split("###")[0]
        for witness in explanation["witnesses"]:
            for key in ("thumbnail", "nearest_thumbnail"):
                assert f"]({witness[key]})" in markdown
                with Image.open(out / witness[key]) as image:
                    image.verify()
                    assert image.format == "JPEG" and max(image.size) <= 96
            # The witness thumbnail shows the image as tested (fogged), not the file on disk.
            with Image.open(out / witness["thumbnail"]) as thumb:
                shown = np.asarray(thumb.convert("RGB"), dtype=float)
            clean = model.transform(read_image(witness["path"]))
            fogged = CorruptionTransform("fog", 5)(clean)
            assert _distance(shown, fogged) < 8.0 < _distance(shown, clean)


def _distance(thumbnail: np.ndarray, image) -> float:
    """Mean absolute pixel difference between a thumbnail and a (3, S, S) uint8 image shrunk to its size."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(thumbnail.shape[1::-1])
    return float(np.abs(thumbnail - np.asarray(pil, dtype=float)).mean())


def test_a_window_larger_than_the_folder_is_one_window_of_all_its_images(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # 20 images: one window of 20, which the checkpoint's 40-image reference calibrates.
    args = f"--data.predict_dir={sample_root / 'val'}", "--limit=20", "--window=100"
    report = _drift(trained_checkpoint, tmp_path, *args)
    assert (
        "--window 100 is more than the 20 images: testing them as one window of 20."
        in capsys.readouterr().out
    )
    assert report["n_images"] == 20 and report["n_windows"] == 1 and report["window_size"] == 20
