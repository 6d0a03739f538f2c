"""`probe_writable`: a location is written (and cleaned up) at start, or refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagenette_drift.storage import StorageError, probe_writable
from tests.serve._gcs import StorageEmulator


def test_a_folder_is_created_and_left_empty(tmp_path: Path) -> None:
    probe_writable(str(tmp_path / "new" / "log"), "--log")
    assert (tmp_path / "new" / "log").is_dir() and not list((tmp_path / "new" / "log").iterdir())


def test_a_folder_behind_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match=r"^--log .*file/log cannot be written \(Not a directory\); pass"):
        probe_writable(str(tmp_path / "file" / "log"), "--log")


def test_a_bucket_is_written_and_left_as_it_was(
    gcs: StorageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    gcs.upload("probed", "fleet/kept.parquet", b"data")
    probe_writable("gs://probed/fleet", "--log")
    assert [blob.name for blob in gcs.client().list_blobs("probed")] == ["fleet/kept.parquet"]


def test_a_missing_bucket_is_refused_naming_it(gcs: StorageEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    with pytest.raises(
        StorageError, match=r"^--log gs://absent/log cannot be written: Bucket gs://absent does"
    ):
        probe_writable("gs://absent/log", "--log")
