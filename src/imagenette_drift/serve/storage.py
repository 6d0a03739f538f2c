"""Resolve a checkpoint location (local path or gs://bucket/object) to a verified local file.

GCS objects are downloaded once into a cache keyed by the object's generation, checked against the
object's md5/crc32c (and an optional expected sha256), with retries and backoff on transient errors. When GCS
cannot be reached, the newest verified cached generation is used, and the result says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagenette_drift.hashing import file_sha256
from imagenette_drift.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)
GS_PREFIX = "gs://"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A local checkpoint file and how it was obtained."""

    path: Path
    source: str
    generation: int | None = None
    from_cache: bool = False
    offline: bool = False  # GCS was unreachable and the cache answered


class StorageError(RuntimeError):
    """A gs:// checkpoint could not be fetched or verified; the message says why and what to do."""


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/path/to/object` -> (bucket, object name)."""
    bucket, _, name = uri.removeprefix(GS_PREFIX).partition("/")
    if not uri.startswith(GS_PREFIX) or not bucket or not name or name.endswith("/"):
        raise ValueError(
            f"{uri!r} is not a GCS object URI; expected gs://BUCKET/OBJECT (e.g. gs://models/last.ckpt)."
        )
    return bucket, name


def resolve_checkpoint(
    location: str,
    cache_dir: Path,
    expected_sha256: str | None = None,
    attempts: int = 4,
    backoff_s: float = 0.5,
    client_factory: Callable[[], Any] | None = None,
) -> ResolvedCheckpoint:
    """Return a verified local file for a path or gs:// URI (see the module docstring)."""
    if location.startswith(GS_PREFIX):
        fetcher = GcsFetcher(location, Path(cache_dir), attempts, backoff_s, client_factory)
        resolved = fetcher.fetch()
    else:
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"Checkpoint {path} does not exist. Train one with `imagenette fit`.")
        resolved = ResolvedCheckpoint(path=path, source=str(path))
    if expected_sha256 is not None:
        actual = file_sha256(resolved.path)
        if actual != expected_sha256.lower():
            raise StorageError(
                f"{location} has sha256 {actual}, but --expected-sha256 is {expected_sha256}; refusing to serve "
                "it. Check the URI (and generation) or update the expected hash."
            )
    return resolved


def _default_client() -> Any:
    """A storage client: application default credentials, else anonymous (public buckets, the emulator)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


def _transient_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.api_core import exceptions as gexc

    return (
        requests.ConnectionError,
        requests.Timeout,
        ConnectionError,
        TimeoutError,
        gexc.TooManyRequests,
        gexc.InternalServerError,
        gexc.BadGateway,
        gexc.ServiceUnavailable,
        gexc.GatewayTimeout,
    )


class GcsFetcher:
    """Download one gs:// object into `<cache_dir>/gcs/<bucket>/<object>/<generation>/` and verify it."""

    def __init__(
        self,
        uri: str,
        cache_dir: Path,
        attempts: int = 4,
        backoff_s: float = 0.5,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.uri = uri
        self.bucket_name, self.object_name = parse_gs_uri(uri)
        self.root = cache_dir / "gcs" / self.bucket_name / self.object_name
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.client_factory = client_factory or _default_client

    def fetch(self) -> ResolvedCheckpoint:
        try:
            blob = self._retry("read the object's metadata", self._get_blob)
        except _Unreachable as e:
            return self._from_cache_offline(e)
        # Read the metadata now: a download may overwrite the blob's properties from its response headers.
        generation, md5, crc32c = int(blob.generation), blob.md5_hash, blob.crc32c
        entry = self.root / str(generation)
        path = entry / Path(self.object_name).name
        if path.is_file() and self._verified(path, md5, crc32c):
            log.info("Using cached %s (generation %s) at %s", self.uri, generation, path)
            return ResolvedCheckpoint(path, self.uri, generation, from_cache=True)
        self._retry("download the object", lambda: self._download(blob, generation, path))
        if not self._verified(path, md5, crc32c):
            path.unlink(missing_ok=True)
            raise StorageError(
                f"{self.uri} (generation {generation}) failed its integrity check after download (md5/crc32c "
                "differ from the object's metadata); the download was corrupted. Try again."
            )
        meta = {"uri": self.uri, "generation": generation, "md5": md5, "crc32c": crc32c}
        write_text_atomic(entry / "object.json", json.dumps(meta))
        log.info("Downloaded %s (generation %s) to %s", self.uri, generation, path)
        return ResolvedCheckpoint(path, self.uri, generation)

    def _get_blob(self) -> Any:
        from google.api_core import exceptions as gexc

        client = self.client_factory()
        try:
            blob = client.bucket(self.bucket_name).get_blob(self.object_name, retry=None, timeout=10)
        except gexc.NotFound as e:
            raise StorageError(
                f"Bucket gs://{self.bucket_name} does not exist (while opening {self.uri})."
            ) from e
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise StorageError(
                f"Permission denied reading {self.uri}: the credentials in use may not read this object. Grant "
                "roles/storage.objectViewer to the service account, or run `gcloud auth application-default "
                f"login`. Detail: {e.message}"
            ) from e
        if blob is None:
            if not client.bucket(self.bucket_name).exists(retry=None, timeout=10):
                raise StorageError(
                    f"Bucket gs://{self.bucket_name} does not exist (while opening {self.uri})."
                )
            raise StorageError(
                f"{self.uri} does not exist: no object {self.object_name!r} in gs://{self.bucket_name}."
            )
        return blob

    def _download(self, blob: Any, generation: int, path: Path) -> None:
        """Download exactly `generation` (not whatever is newest by then) to `path`, atomically."""
        pinned = blob.bucket.blob(blob.name, generation=generation)
        with atomic_path(path) as tmp:
            pinned.download_to_filename(str(tmp), retry=None, timeout=60, checksum=None)

    def _retry(self, what: str, action: Callable[[], Any]) -> Any:
        transient = _transient_errors()
        for attempt in range(self.attempts):
            try:
                return action()
            except transient as e:
                if attempt + 1 == self.attempts:
                    raise _Unreachable(
                        f"could not {what} of {self.uri} after {self.attempts} attempts: {e}"
                    ) from e
                delay = self.backoff_s * 2**attempt
                log.warning("GCS error (%s); retrying in %.1f s", type(e).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

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
    """Transient errors persisted through every retry."""


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
