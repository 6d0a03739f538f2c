"""gs:// checkpoints through the real google-cloud-storage client against gcp-storage-emulator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imagenette_drift.storage import StorageError, parse_gs_uri, resolve_checkpoint
from tests.serve._server import free_port


@pytest.fixture
def use_emulator(gcs, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    return gcs


def _resolve(uri: str, cache: Path, **kwargs):
    return resolve_checkpoint(uri, cache, retry_deadline_s=1.0, **kwargs)


def test_download_is_cached_by_generation(use_emulator, tmp_path: Path) -> None:
    generation = use_emulator.upload("models", "runs/a/last.ckpt", b"first version")
    first = _resolve("gs://models/runs/a/last.ckpt", tmp_path)
    assert first.path.read_bytes() == b"first version" and first.generation == generation
    assert not first.from_cache and first.path.name == "last.ckpt"
    again = _resolve("gs://models/runs/a/last.ckpt", tmp_path)
    assert again.from_cache and again.path == first.path
    newer = use_emulator.upload("models", "runs/a/last.ckpt", b"second version")
    updated = _resolve("gs://models/runs/a/last.ckpt", tmp_path)
    assert updated.generation == newer != generation and not updated.from_cache
    assert updated.path.read_bytes() == b"second version" and first.path.read_bytes() == b"first version"


def test_a_corrupted_cache_entry_is_downloaded_again(use_emulator, tmp_path: Path) -> None:
    use_emulator.upload("models", "c.ckpt", b"the real bytes")
    path = _resolve("gs://models/c.ckpt", tmp_path).path
    path.write_bytes(b"the real bytez")  # same size, different md5/crc32c
    again = _resolve("gs://models/c.ckpt", tmp_path)
    assert not again.from_cache and again.path.read_bytes() == b"the real bytes"


def test_expected_sha256_is_enforced(use_emulator, tmp_path: Path) -> None:
    use_emulator.upload("models", "s.ckpt", b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    assert _resolve("gs://models/s.ckpt", tmp_path, expected_sha256=good).path.read_bytes() == b"payload"
    with pytest.raises(StorageError, match=r"has sha256 \w+, but --expected_sha256 is 00"):
        _resolve("gs://models/s.ckpt", tmp_path, expected_sha256="00" * 32)


def test_missing_bucket_and_object_are_one_clear_error(use_emulator, tmp_path: Path) -> None:
    use_emulator.upload("models", "present.ckpt", b"x")
    with pytest.raises(
        StorageError, match=r"gs://models/absent.ckpt does not exist: no object 'absent.ckpt'"
    ):
        _resolve("gs://models/absent.ckpt", tmp_path)
    with pytest.raises(StorageError, match=r"Bucket gs://no-such-bucket does not exist"):
        _resolve("gs://no-such-bucket/a.ckpt", tmp_path)


def test_unreachable_gcs_falls_back_to_the_verified_cache(use_emulator, tmp_path: Path, monkeypatch) -> None:
    generation = use_emulator.upload("models", "o.ckpt", b"offline copy")
    _resolve("gs://models/o.ckpt", tmp_path)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    offline = _resolve("gs://models/o.ckpt", tmp_path)
    assert offline.offline and offline.from_cache and offline.generation == generation
    assert offline.path.read_bytes() == b"offline copy"
    with pytest.raises(
        StorageError, match=r"GCS is unreachable .* and no verified copy of gs://models/never\.ckpt"
    ):
        _resolve("gs://models/never.ckpt", tmp_path)
    offline.path.write_bytes(b"tampered!!!!")
    with pytest.raises(StorageError, match="no verified copy"):  # a corrupted cache is refused, not served
        _resolve("gs://models/o.ckpt", tmp_path)


def test_local_paths_and_bad_uris(tmp_path: Path) -> None:
    local = tmp_path / "m.ckpt"
    local.write_bytes(b"x")
    assert resolve_checkpoint(str(local), tmp_path).path == local
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "missing.ckpt"), tmp_path)
    for bad in ("gs://", "gs://bucket", "gs://bucket/", "gs://bucket/dir/"):
        with pytest.raises(ValueError, match="expected gs://BUCKET/OBJECT"):
            parse_gs_uri(bad)
