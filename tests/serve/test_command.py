"""`imagenette serve` start-up: clear errors for bad checkpoints, and a gs:// checkpoint served from its cache."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from imagenette_drift.commands.serve import main
from tests.serve._gcs import StorageEmulator
from tests.serve._server import IMAGENETTE, ServeProcess


def _start_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error(
    tmp_path: Path, capsys, sample_root: Path
) -> None:
    jpeg = next((sample_root / "val").rglob("*.JPEG"))
    err = _start_error(capsys, "--ckpt_path", str(jpeg), "--cache_dir", str(tmp_path))
    assert err.startswith("imagenette serve: error: ") and "is not a readable PyTorch checkpoint" in err
    assert "Traceback" not in err
    err = _start_error(capsys, "--ckpt_path", str(tmp_path / "none.ckpt"), "--cache_dir", str(tmp_path))
    assert "does not exist. Train one with `imagenette fit`" in err


def test_bad_options_are_refused_before_loading(tmp_path: Path, capsys) -> None:
    assert "--port must be between 1024 and 65535" in _start_error(capsys, "--ckpt_path", "x", "--port", "80")
    assert "invalid choice: 'tf'" in _start_error(capsys, "--ckpt_path", "x", "--runtime", "tf")
    assert "must be a positive integer" in _start_error(capsys, "--ckpt_path", "x", "--workers", "0")


def test_a_missing_gcs_object_is_a_clear_error(gcs, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    gcs.upload("models", "other.ckpt", b"x")
    err = _start_error(capsys, "--ckpt_path", "gs://models/missing.ckpt", "--cache_dir", str(tmp_path))
    assert "imagenette serve: error: gs://models/missing.ckpt does not exist" in err


@pytest.mark.slow
def test_server_restarts_from_its_cache_when_gcs_is_unreachable(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    emulator = StorageEmulator(tmp_path / "emulator.log").start()
    try:
        generation = emulator.upload("models", "prod/last.ckpt", trained_checkpoint)
        args = ("--cache_dir", str(tmp_path / "cache"))
        env = {"STORAGE_EMULATOR_HOST": emulator.host}
        with ServeProcess("gs://models/prod/last.ckpt", tmp_path / "first.log", *args, env=env) as server:
            info = requests.get(f"{server.url}/info", timeout=5).json()
            assert info["checkpoint"]["source"] == "gs://models/prod/last.ckpt"
    finally:
        emulator.stop()
    with ServeProcess("gs://models/prod/last.ckpt", tmp_path / "second.log", *args, env=env) as server:
        assert (
            requests.get(f"{server.url}/info", timeout=5).json()["checkpoint"]["sha256"]
            == info["checkpoint"]["sha256"]
        )
        assert (
            f"GCS unreachable; serving cached generation {generation} of gs://models/prod/last.ckpt"
            in server.log()
        )


def _refused(checkpoint: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """The one stderr line of `imagenette serve` refusing to start (exit 2, no traceback); it must not serve."""
    result = subprocess.run(
        [str(IMAGENETTE), "serve", "--ckpt_path", str(checkpoint), "--host", "127.0.0.1", "--runtime", "torch",
         "--cache_dir", str(tmp_path / "cache"), *args],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagenette serve: error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_a_port_in_use_is_refused_with_the_fix(trained_checkpoint: Path, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        line = _refused(trained_checkpoint, tmp_path, "--port", str(port))
    assert f"port {port} on 127.0.0.1 is not free" in line and "--port N" in line


@pytest.mark.slow
def test_a_log_folder_that_cannot_be_written_is_refused_at_start(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    """Before: the server started and only warned at its first flush."""
    (tmp_path / "file").write_text("a file where the log's folder should be")
    line = _refused(trained_checkpoint, tmp_path, "--log", str(tmp_path / "file" / "log"))
    assert f"--log {tmp_path / 'file' / 'log'} cannot be written (Not a directory)" in line


@pytest.mark.slow
def test_a_gcs_log_that_cannot_be_written_is_refused_at_start(
    gcs: StorageEmulator, trained_checkpoint: Path, tmp_path: Path
) -> None:
    line = _refused(
        trained_checkpoint,
        tmp_path,
        "--log",
        "gs://absent-bucket/log",
        env={"STORAGE_EMULATOR_HOST": gcs.host},
    )
    assert "--log gs://absent-bucket/log cannot be written" in line
    assert (
        "Bucket gs://absent-bucket does not exist (while opening gs://absent-bucket/log/.write-probe-" in line
    )
