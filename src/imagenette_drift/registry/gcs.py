"""The registry under a GCS prefix, through google-cloud-storage; the champion moves by `if_generation_match`.

Credentials come from the environment only (application default credentials: `gcloud auth
application-default login`, Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS`); `STORAGE_EMULATOR_HOST`
points the client at an emulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagenette_drift.registry.base import CHECKPOINT_NAME, Registry, RegistryError, conflict


def _client() -> Any:
    """A storage client from application default credentials, else anonymous (public buckets, the emulator)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


class GcsRegistry(Registry):
    """A registry at `gs://bucket/prefix`. Objects are created with `if_generation_match=0` (never half
    written, never overwritten); only the `champion` pointer is replaced, by compare-and-swap."""

    def __init__(self, location: str) -> None:
        bucket, _, prefix = location.removeprefix("gs://").partition("/")
        if not location.startswith("gs://") or not bucket:
            raise RegistryError(f"{location!r} is not a GCS prefix; expected gs://BUCKET/PREFIX.")
        self.location = f"gs://{bucket}/{prefix.strip('/')}".rstrip("/")
        self.bucket_name, self.prefix = bucket, prefix.strip("/")
        self._bucket = _client().bucket(bucket)

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from google.api_core import exceptions as gexc

        try:
            yield
        except gexc.NotFound as e:
            raise RegistryError(f"cannot {what}: bucket gs://{self.bucket_name} does not exist.") from e
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise RegistryError(
                f"cannot {what} in {self.location}: permission denied. Grant the credentials in use "
                "roles/storage.objectAdmin on the bucket, or run `gcloud auth application-default login`. "
                f"Detail: {e.message}"
            ) from e

    def _put_new(self, name: str, source: Path) -> bool:
        from google.api_core import exceptions as gexc

        with self._errors(f"upload {name}"):
            try:
                self._bucket.blob(self._name(name)).upload_from_filename(str(source), if_generation_match=0)
            except gexc.PreconditionFailed:
                return False
        return True

    def _read(self, name: str) -> tuple[bytes, int] | None:
        from google.api_core import exceptions as gexc

        with self._errors(f"read {name}"):
            blob = self._bucket.get_blob(self._name(name))
            if blob is None:
                return None
            generation = int(blob.generation)
            try:  # exactly the generation whose number we return, even if it was replaced meanwhile
                data = self._bucket.blob(self._name(name), generation=generation).download_as_bytes()
            except gexc.NotFound:
                return self._read(name)
        return data, generation

    def _swap(self, name: str, data: bytes, generation: int) -> int:
        from google.api_core import exceptions as gexc

        blob = self._bucket.blob(self._name(name))
        with self._errors(f"write {name}"):
            try:
                blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
            except gexc.PreconditionFailed as e:
                raise conflict(name, self.location, generation) from e
        return int(blob.generation)

    def _versions(self) -> list[str]:
        with self._errors("list versions"):
            prefix = f"{self.prefix}/" if self.prefix else ""
            blobs = self._bucket.client.list_blobs(self.bucket_name, prefix=prefix, delimiter="/")
            for _ in blobs.pages:
                pass  # the folder names (`prefixes`) fill in as the pages are read
            return sorted(p.removeprefix(prefix).rstrip("/") for p in blobs.prefixes)

    def fetch(self, version: str, cache_dir: Path) -> Path:
        """Download (once, verified, cached by generation) `version`'s model.ckpt into `cache_dir`."""
        from imagenette_drift.serve.storage import resolve_checkpoint

        uri = f"gs://{self.bucket_name}/{self._name(f'{self.show(version).version}/{CHECKPOINT_NAME}')}"
        return resolve_checkpoint(uri, cache_dir).path

    def _uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(name)}"
