"""`imagenette report`: report.md and metrics.json from a real (tiny) run's log folders and drift reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from imagenette_drift.cli import cli_main
from imagenette_drift.commands import drift as drift_command
from imagenette_drift.reports.training import drift_metrics, flatten, metrics_table
from tests.conftest import CONFIGS, SAMPLE_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fit + test with the pipeline preset (CSV logs, profiler) and clean/shifted drift reports, in-process."""
    import os

    root = tmp_path_factory.mktemp("report_run")
    common = [
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        "--config",
        str(CONFIGS / "presets" / "pipeline.yaml"),
        f"--data.root={SAMPLE_ROOT}",
    ]
    cwd = Path.cwd()
    os.chdir(root)
    try:
        cli_main(["fit", *common, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2"])
        cli_main(
            [
                "test",
                *common,
                "--ckpt_path=outputs/pipeline/checkpoints/best.ckpt",
                "--trainer.logger.init_args.name=test",
                "--trainer.profiler.init_args.dirpath=outputs/pipeline/test",
            ]
        )
        for name, extra in (
            ("clean", []),
            ("shifted", ["--data.corruption", "gaussian_noise", "--data.severity", "5"]),
        ):
            drift_command.main(
                [
                    "--ckpt_path",
                    "outputs/pipeline/checkpoints/best.ckpt",
                    "--data.predict_dir",
                    str(SAMPLE_ROOT / "val"),
                    "--window",
                    "10",
                    "--output",
                    f"outputs/pipeline/drift/{name}",
                    *extra,
                ]
            )
    finally:
        os.chdir(cwd)
    return root / "outputs" / "pipeline"


def _report_args(run: Path, out: Path, *extra: str) -> list[str]:
    return [
        "report",
        "--log_dir",
        str(run / "fit"),
        "--log_dir",
        str(run / "test"),
        "--drift",
        str(run / "drift" / "clean" / "drift_report.json"),
        "--drift",
        str(run / "drift" / "shifted" / "drift_report.json"),
        "--profile",
        str(run / "fit" / "fit-profile.txt"),
        "--output",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_report_holds_the_runs_numbers_and_valid_pngs(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    cli_main(_report_args(run_dir, out, "--metrics", str(tmp_path / "metrics.json")))

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    test_run = json.loads((run_dir / "test" / "test_metrics.json").read_text())
    assert metrics["test"] == {
        "top1": test_run["test/acc"],
        "top5": test_run["test/acc_top5"],
        "f1": test_run["test/f1"],
    }
    clean = json.loads((run_dir / "drift" / "clean" / "drift_report.json").read_text())
    shifted = json.loads((run_dir / "drift" / "shifted" / "drift_report.json").read_text())
    assert "chi2" not in clean["methods"]  # windows of 10: fewer than 5 images per class, no label-shift test
    for method in ("mmd", "ks", "inputs"):
        assert metrics["drift"]["fpr"][method] == clean["methods"][method]["flagged_fraction"]
        assert metrics["drift"]["power"][method] == shifted["methods"][method]["flagged_fraction"]

    report = (out / "report.md").read_text()
    for name, value in flatten(metrics).items():
        assert f"| {name} | {value:.4f} |" in report
    assert f"| gaussian_noise-5 | {shifted['n_images']} | {shifted['n_windows']} x 10 |" in report
    # label-free accuracy estimates and explanations of each drift report
    assert "### Estimated accuracy (no labels) and explanations" in report
    estimates = " | ".join(f"{v:.1%}" for v in shifted["accuracy"]["methods"].values())
    assert f"| gaussian_noise-5 | {shifted['accuracy']['heldout']:.1%} | {estimates} |" in report
    assert "| run_training_epoch |" in report  # the profiler's table
    images = ["learning_curves.png", "confusion_matrix.png", "drift_clean.png", "drift_shifted.png"]
    for name in images:
        assert f"]({name})" in report
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.slow
def test_report_compares_with_a_baseline(run_dir: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "main_metrics.json"
    baseline.write_text(json.dumps({"test": {"top1": 0.5, "retired": 0.25}}))
    cli_main(_report_args(run_dir, tmp_path / "r", "--baseline", str(baseline)))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    report = (tmp_path / "r" / "report.md").read_text()
    top1 = metrics["test"]["top1"]
    assert "| metric | this run | baseline | change |" in report
    assert f"| test/top1 | {top1:.4f} | 0.5000 | {top1 - 0.5:+.4f} |" in report
    assert "| test/top5 |" in report and "| test/retired | - | 0.2500 | - |" in report


def test_missing_inputs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["report", "--log_dir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert f"--log_dir {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        cli_main(["report", "--log_dir", str(tmp_path)])
    assert "found no val_metrics.json or test_metrics.json" in capsys.readouterr().err

    (tmp_path / "drift_report.json").write_text(json.dumps({"n_images": 3}))
    with pytest.raises(SystemExit):
        cli_main(["report", "--log_dir", str(tmp_path), "--drift", str(tmp_path / "drift_report.json")])
    assert "is not a drift report (missing methods, n_windows, window_size)" in capsys.readouterr().err

    (tmp_path / "test_metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    (tmp_path / "profile.txt").write_text("not a profiler table\n")
    with pytest.raises(SystemExit):
        cli_main(["report", "--log_dir", str(tmp_path), "--profile", str(tmp_path / "profile.txt")])
    assert "not a Lightning profiler summary" in capsys.readouterr().err

    (tmp_path / "base.json").write_text("{oops")
    with pytest.raises(SystemExit):
        cli_main(["report", "--log_dir", str(tmp_path), "--baseline", str(tmp_path / "base.json")])
    assert f"{tmp_path / 'base.json'} is not valid JSON" in capsys.readouterr().err


def test_without_a_csv_log_the_report_says_how_to_get_curves(tmp_path: Path) -> None:
    (tmp_path / "test_metrics.json").write_text(json.dumps({"test/acc": 0.75, "test/f1": 0.5, "epoch": 2}))
    cli_main(["report", "--log_dir", str(tmp_path), "--output", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"test": {"top1": 0.75, "f1": 0.5}}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| test/top1 | 0.7500 |" in report
    assert "No metrics.csv in the log folders" in report
    assert not (tmp_path / "out" / "learning_curves.png").exists()


def test_drift_windows_are_pooled_over_reports() -> None:
    def report(corruption: str | None, flagged: float, windows: int) -> dict:
        methods = {"mmd": {"flagged_fraction": flagged, "median_p_value": 0.5}}
        return {"methods": methods, "n_windows": windows, "source": {"corruption": corruption, "severity": 3}}

    pooled = drift_metrics(
        [report(None, 0.25, 4), report(None, 0.0, 4), report("fog", 1.0, 2), report("snow", 0.5, 2)]
    )
    assert pooled == {"fpr": {"mmd": 1 / 8}, "power": {"mmd": 3 / 4}}


def test_metrics_table_without_baseline() -> None:
    assert (
        metrics_table({"test/top1": 0.123456}) == "| metric | value |\n| --- | ---: |\n| test/top1 | 0.1235 |"
    )
