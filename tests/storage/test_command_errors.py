"""gs:// failures through the real `imagenette` command: one line naming the bucket, the object and the cause.

The real google-cloud-storage and gcsfs clients against gcp-storage-emulator; a bucket that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve._gcs import StorageEmulator

pytestmark = pytest.mark.slow  # subprocesses

IMAGENETTE = Path(sys.executable).with_name("imagenette")
MISSING = "no-such-bucket"


def _run(gcs: StorageEmulator, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script against the emulator, as a user runs it."""
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs.host, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(IMAGENETTE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def _assert_one_line(result: subprocess.CompletedProcess, *named: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(text in lines[0] for text in named), lines[0]
    return lines[0]


@pytest.mark.parametrize("action", ["list", "show champion", "lineage"])
def test_registry_on_a_missing_bucket(gcs: StorageEmulator, tmp_path: Path, action: str) -> None:
    result = _run(gcs, "registry", "--registry", f"gs://{MISSING}/models", *action.split(), cwd=tmp_path)
    line = _assert_one_line(result, f"gs://{MISSING}", "does not exist", f"gs://{MISSING}/models")
    assert line.startswith("imagenette registry: error: ")


def test_export_labelled_from_a_missing_bucket(gcs: StorageEmulator, tmp_path: Path) -> None:
    log = f"gs://{MISSING}/fleet/log"
    result = _run(gcs, "export-labelled", "--log", log, "--output", str(tmp_path / "data"), cwd=tmp_path)
    _assert_one_line(result, log, f"gs://{MISSING} does not exist")
    assert not (tmp_path / "data").exists()


def test_export_labelled_from_a_bucket_with_no_log_yet(gcs: StorageEmulator, tmp_path: Path) -> None:
    """Before: an ArrowTypeError traceback (an empty column typed null)."""
    gcs.client().create_bucket("empty-log")
    log = "gs://empty-log/fleet/log"
    result = _run(gcs, "export-labelled", "--log", log, "--output", str(tmp_path / "data"), cwd=tmp_path)
    _assert_one_line(result, f"the log {log} holds no labelled image to export")


def test_monitor_of_a_missing_bucket(gcs: StorageEmulator, trained_checkpoint: Path, tmp_path: Path) -> None:
    """Before: 0 windows and exit 0, as if the log were empty."""
    log = f"gs://{MISSING}/inference-log"
    result = _run(
        gcs, "monitor", "--log", log, "--ckpt_path", str(trained_checkpoint), "--out", str(tmp_path / "out"),
        cwd=tmp_path,
    )  # fmt: skip
    _assert_one_line(result, log, f"gs://{MISSING} does not exist")
