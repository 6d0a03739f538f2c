"""The `imagenette` command end to end on the shipped sample: fit, validate, test, predict, configs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from imagenette_drift.classes import CLASS_NAMES
from imagenette_drift.cli import cli_main
from tests.conftest import CONFIGS, REPO, SAMPLE_ROOT, quickstart_args

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path, threads: int | None = None) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess, as a user runs it."""
    exe = Path(sys.executable).with_name("imagenette")
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_top_level_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "predict"):
        assert f"  {command} " in result.stdout


def test_fit_writes_checkpoints_config_confusion_matrix_and_offline_wandb_run(trained_run: Path) -> None:
    checkpoints = trained_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert len(list(checkpoints.glob("epoch*-acc*.ckpt"))) == 1
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2 and config["data"]["root"] == str(SAMPLE_ROOT)
    assert (trained_run / "val_confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # (Later in-process commands may add runs here too: wandb keeps its first run directory per process.)
    runs = sorted((trained_run / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb"))
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 4  # 70 images, batch 16, drop_last


def test_validate_test_and_predict_from_a_checkpoint(trained_checkpoint: Path, in_tmp: Path) -> None:
    ckpt = f"--ckpt_path={trained_checkpoint}"
    cli = cli_main(quickstart_args("test", ckpt))
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/acc"]) <= 1.0 and float(metrics["test/acc_top5"]) >= float(
        metrics["test/acc"]
    )
    assert (in_tmp / "outputs" / "quickstart" / "test_confusion_matrix.png").is_file()
    cli = cli_main(quickstart_args("validate", ckpt))
    assert "val/acc" in cli.trainer.callback_metrics

    cli_main(quickstart_args("predict", ckpt))
    with open(in_tmp / "outputs" / "quickstart" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert {row["label"] for row in rows} <= set(CLASS_NAMES)
    assert all(Path(row["path"]).parent.name == row["target"] for row in rows)
    assert all(0.0 < float(row["confidence"]) <= 1.0 for row in rows)


def test_predict_on_any_folder_of_images(trained_checkpoint: Path, in_tmp: Path) -> None:
    folder = in_tmp / "production"
    folder.mkdir()
    for i, src in enumerate(sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))[:5]):
        (folder / f"img{i}.jpg").write_bytes(src.read_bytes())
    cli_main(quickstart_args("predict", f"--ckpt_path={trained_checkpoint}", f"--data.predict_dir={folder}"))
    with open(in_tmp / "outputs" / "quickstart" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == [f"img{i}.jpg" for i in range(5)]
    assert all(r["target"] == "" for r in rows)


def test_resume_from_last_checkpoint_continues_at_the_next_epoch(
    trained_checkpoint: Path, in_tmp: Path
) -> None:
    cli = cli_main(quickstart_args("fit", "--trainer.max_epochs=3", f"--ckpt_path={trained_checkpoint}"))
    assert cli.trainer.current_epoch == 3
    assert cli.trainer.global_step == 3 * 4  # 2 epochs restored + 1 trained, not 3 trained
    resumed = torch.load(in_tmp / "outputs" / "quickstart" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 12


def test_several_configs_merge_left_to_right(in_tmp: Path) -> None:
    cli = cli_main(
        [*quickstart_args("fit", "--config", str(CONFIGS / "presets" / "debug.yaml")), "--data.batch_size=8"]
    )
    assert cli.trainer.max_epochs == 1 and cli.trainer.logger is None  # from debug.yaml
    assert cli.datamodule.batch_size == 8  # the flag wins over both files
    assert cli.model.hparams.model_name == "resnet18"  # from quickstart.yaml
    assert cli.trainer.global_step == 2


def test_print_config_round_trips(in_tmp: Path) -> None:
    first = run_cli(*quickstart_args("fit", "--trainer.max_epochs=7", "--print_config"), cwd=in_tmp)
    assert first.returncode == 0, first.stderr
    (in_tmp / "printed.yaml").write_text(first.stdout)
    second = run_cli("fit", "--config", "printed.yaml", "--print_config", cwd=in_tmp)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert yaml.safe_load(first.stdout)["trainer"]["max_epochs"] == 7


@pytest.mark.parametrize(
    ("flag", "named"),
    [("--trainer.max_epoch=3", "trainer.max_epoch"), ("--data.batch_size=many", "data.batch_size")],
)
def test_bad_flag_fails_before_training_and_names_it(in_tmp: Path, flag: str, named: str) -> None:
    result = run_cli(*quickstart_args("fit", flag), cwd=in_tmp)
    assert result.returncode != 0
    assert named in result.stderr
    assert not (in_tmp / "outputs").exists()


def test_bad_choice_is_refused_at_parse_time(in_tmp: Path) -> None:
    result = run_cli(*quickstart_args("fit", "--model.scheduler=exponential"), cwd=in_tmp)
    assert result.returncode != 0 and "model.scheduler" in result.stderr


def test_unknown_command_lists_the_valid_ones(in_tmp: Path) -> None:
    result = run_cli("train", cwd=in_tmp)
    assert result.returncode == 2 and "fit" in result.stderr


def test_csv_logger_and_simple_profiler(in_tmp: Path) -> None:
    cli = cli_main(
        [
            *quickstart_args("fit", "--config", str(CONFIGS / "presets" / "csv.yaml")),
            "--trainer.max_epochs=1",
            "--trainer.profiler=simple",
        ]
    )
    metrics = list((in_tmp / "outputs" / "csv").rglob("metrics.csv"))
    assert len(metrics) == 1
    header = metrics[0].read_text().splitlines()[0].split(",")
    assert {"val/acc", "val/f1", "train/loss_epoch"} <= set(header)
    assert cli.trainer.profiler.recorded_durations["run_training_epoch"]


def test_any_timm_model_name_trains(in_tmp: Path) -> None:
    cli = cli_main(
        [
            *quickstart_args("fit", "--config", str(CONFIGS / "presets" / "debug.yaml")),
            "--model.model_name=mobilenetv3_small_050",
        ]
    )
    assert cli.model.embed(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape[0] == 2


def test_ddp_on_cpu_with_two_gloo_processes(in_tmp: Path) -> None:
    result = run_cli(
        *quickstart_args("fit", "--config", str(CONFIGS / "presets" / "ddp.yaml")),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        cwd=in_tmp,
        threads=1,  # two processes on two cores: one thread each, or they slow each other down 10x
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(
        in_tmp / "outputs" / "quickstart" / "checkpoints" / "last.ckpt", weights_only=True
    )
    # 70 training images split over 2 ranks -> 35 each -> 2 batches of 16 per rank (1 process would take 4).
    assert checkpoint["global_step"] == 2


def test_readme_quickstart_command_is_the_config_we_test() -> None:
    assert "imagenette fit --config configs/quickstart.yaml" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("args", [["--help"], ["registry", "--registry", "{tmp}/registry", "list"]])
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, args: list[str]) -> None:
    """`imagenette registry show ... | head`: the pipe closes before the command writes; it exits 1 quietly."""
    exe = Path(sys.executable).with_name("imagenette")
    argv = [str(exe), *(a.format(tmp=tmp_path) for a in args)]
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the command has imported anything, let alone printed
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and err == b"", err.decode()
