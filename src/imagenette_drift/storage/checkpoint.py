"""Resolve a checkpoint location (local path or gs://bucket/object) to a verified local file.

GCS objects are downloaded once into a cache keyed by the object's generation. google-cloud-storage does the
transient-error retries (its `DEFAULT_RETRY`, exponential backoff up to a deadline) and the download's crc32c
check; what it lacks is ours: re-verifying a cached file against the object's recorded md5/crc32c before it is
used again, an optional expected sha256, and, when GCS cannot be reached, serving the newest verified cached
generation (the result says so).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagenette_drift.errors import MissingCheckpointError
from imagenette_drift.hashing import file_sha256
from imagenette_drift.io import atomic_path, write_text_atomic
from imagenette_drift.storage.errors import PERMISSION_FIX, StorageError, transient_errors
from imagenette_drift.storage.gcs import default_client, missing_bucket
from imagenette_drift.storage.uri import GS_PREFIX, parse_gs_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A local checkpoint file and how it was obtained."""

    path: Path
    source: str
    generation: int | None = None
    from_cache: bool = False
    offline: bool = False  # GCS was unreachable and the cache answered


def resolve_checkpoint(
    location: str,
    cache_dir: Path,
    expected_sha256: str | None = None,
    retry_deadline_s: float = 60.0,
    client_factory: Callable[[], Any] | None = None,
) -> ResolvedCheckpoint:
    """Return a verified local file for a path or gs:// URI (see the module docstring).

    `retry_deadline_s` bounds the library's retries of transient errors (seconds, per call) before GCS counts
    as unreachable. Raises `MissingCheckpointError` (a `FileNotFoundError`) for a missing local file and `StorageError` for a GCS problem.
    """
    if location.startswith(GS_PREFIX):
        fetcher = GcsFetcher(location, Path(cache_dir), retry_deadline_s, client_factory)
        resolved = fetcher.fetch()
    else:
        path = Path(location)
        if not path.is_file():
            raise MissingCheckpointError(
                f"Checkpoint {path} does not exist. Train one with `imagenette fit`."
            )
        resolved = ResolvedCheckpoint(path=path, source=str(path))
    if expected_sha256 is not None:
        actual = file_sha256(resolved.path)
        if actual != expected_sha256.lower():
            raise StorageError(
                f"{location} has sha256 {actual}, but --expected_sha256 is {expected_sha256}; refusing to serve "
                "it. Check the URI (and generation) or update the expected hash."
            )
    return resolved


class GcsFetcher:
    """Download one gs:// object into `<cache_dir>/gcs/<bucket>/<object>/<generation>/` and verify it."""

    def __init__(
        self,
        uri: str,
        cache_dir: Path,
        retry_deadline_s: float = 60.0,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.uri = uri
        self.bucket_name, self.object_name = parse_gs_uri(uri)
        self.root = cache_dir / "gcs" / self.bucket_name / self.object_name
        self.retry = DEFAULT_RETRY.with_deadline(retry_deadline_s)  # the library's backoff and error set
        self.client_factory = client_factory or default_client

    def fetch(self) -> ResolvedCheckpoint:
        try:
            blob = self._unless_unreachable("read the object's metadata", self._get_blob)
        except _Unreachable as e:
            return self._from_cache_offline(e)
        # Read the metadata now: a download may overwrite the blob's properties from its response headers.
        generation, md5, crc32c = int(blob.generation), blob.md5_hash, blob.crc32c
        entry = self.root / str(generation)
        path = entry / Path(self.object_name).name
        if path.is_file() and self._verified(path, md5, crc32c):
            log.info("Using cached %s (generation %s) at %s", self.uri, generation, path)
            return ResolvedCheckpoint(path, self.uri, generation, from_cache=True)
        self._unless_unreachable("download the object", lambda: self._download(blob, generation, path))
        meta = {"uri": self.uri, "generation": generation, "md5": md5, "crc32c": crc32c}
        write_text_atomic(entry / "object.json", json.dumps(meta))
        log.info("Downloaded %s (generation %s) to %s", self.uri, generation, path)
        return ResolvedCheckpoint(path, self.uri, generation)

    def _get_blob(self) -> Any:
        from google.api_core import exceptions as gexc

        client = self.client_factory()
        try:
            blob = client.bucket(self.bucket_name).get_blob(self.object_name, retry=self.retry, timeout=10)
        except gexc.NotFound as e:
            raise missing_bucket(self.bucket_name, self.uri) from e
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise StorageError(
                f"cannot read {self.uri}: permission denied ({e.message}); {PERMISSION_FIX}."
            ) from e
        if blob is None:
            if not client.bucket(self.bucket_name).exists(retry=self.retry, timeout=10):
                raise missing_bucket(self.bucket_name, self.uri)
            raise StorageError(
                f"{self.uri} does not exist: no object {self.object_name!r} in gs://{self.bucket_name}."
            )
        return blob

    def _download(self, blob: Any, generation: int, path: Path) -> None:
        """Download exactly `generation` (not whatever is newest by then) to `path`, atomically; the library
        retries transient errors and checks the bytes' crc32c against the object's."""
        from google.cloud.storage.exceptions import DataCorruption

        pinned = blob.bucket.blob(blob.name, generation=generation)
        try:
            with atomic_path(path) as tmp:
                pinned.download_to_filename(str(tmp), retry=self.retry, timeout=60, checksum="crc32c")
        except DataCorruption as e:
            raise StorageError(
                f"{self.uri} (generation {generation}) failed its crc32c check after download; the download was "
                "corrupted. Try again."
            ) from e

    def _unless_unreachable(self, what: str, action: Callable[[], Any]) -> Any:
        """Run `action` (whose calls retry by themselves); transient errors left over mean GCS is unreachable."""
        try:
            return action()
        except transient_errors() as e:
            raise _Unreachable(f"could not {what} of {self.uri}: {type(e).__name__}: {e}") from e

    def _verified(self, path: Path, md5_b64: str | None, crc32c_b64: str | None) -> bool:
        """True when the file's md5 (and crc32c, when the library is available) match the object's metadata."""
        if md5_b64 is None and crc32c_b64 is None:
            return True  # composite objects have neither; the optional sha256 is the check then
        md5_ok = md5_b64 is None or _md5_b64(path) == md5_b64
        return md5_ok and (crc32c_b64 is None or _crc32c_b64(path) == crc32c_b64)

    def _from_cache_offline(self, error: _Unreachable) -> ResolvedCheckpoint:
        """The newest cached generation that still verifies against its recorded metadata."""
        entries = sorted(
            (p for p in self.root.glob("*/object.json")), key=lambda p: int(p.parent.name), reverse=True
        )
        for meta_path in entries:
            meta = json.loads(meta_path.read_text())
            path = meta_path.parent / Path(self.object_name).name
            if path.is_file() and self._verified(path, meta.get("md5"), meta.get("crc32c")):
                log.warning(
                    "GCS is unreachable (%s); serving the cached generation %s of %s from %s",
                    error,
                    meta["generation"],
                    self.uri,
                    path,
                )
                return ResolvedCheckpoint(
                    path, self.uri, int(meta["generation"]), from_cache=True, offline=True
                )
        raise StorageError(
            f"GCS is unreachable ({error}) and no verified copy of {self.uri} is cached in {self.root}. Check the "
            "network (or STORAGE_EMULATOR_HOST), then start again."
        ) from error


class _Unreachable(Exception):
    """Transient errors persisted through the library's retries."""


def _md5_b64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def _crc32c_b64(path: Path) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()
