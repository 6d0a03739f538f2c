"""The registry under a GCS prefix (`storage.GcsPrefix`); the champion moves by `if_generation_match`."""

from __future__ import annotations

from pathlib import Path

from imagenette_drift.registry.base import CHECKPOINT_NAME, Registry, RegistryError, conflict


class GcsRegistry(Registry):
    """A registry at `gs://bucket/prefix`. Objects are created with `if_generation_match=0` (never half
    written, never overwritten); only the `champion` pointer is replaced, by compare-and-swap. Storage failures
    raise `StorageError` naming the bucket, the object and the cause."""

    def __init__(self, location: str) -> None:
        from imagenette_drift.storage.gcs import GcsPrefix

        try:
            self.objects = GcsPrefix(location)
        except ValueError as e:
            raise RegistryError(f"{location!r} is not a GCS prefix; expected gs://BUCKET/PREFIX.") from e
        self.location = self.objects.location
        self.bucket_name, self.prefix = self.objects.bucket_name, self.objects.prefix

    def _put_new(self, name: str, source: Path) -> bool:
        return self.objects.create(name, source)

    def _read(self, name: str) -> tuple[bytes, int] | None:
        from google.api_core import exceptions as gexc

        blob = self.objects.get_blob(name)
        if blob is None:
            return None
        generation = int(blob.generation)
        with self.objects.errors("read", name):
            try:  # exactly the generation whose number we return, even if it was replaced meanwhile
                data = self.objects.bucket.blob(blob.name, generation=generation).download_as_bytes()
            except gexc.NotFound:
                return self._read(name)
        return data, generation

    def _swap(self, name: str, data: bytes, generation: int) -> int:
        from google.api_core import exceptions as gexc

        blob = self.objects.bucket.blob(self.objects.name(name))
        with self.objects.errors("write", name):
            try:
                blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
            except gexc.PreconditionFailed as e:
                raise conflict(name, self.location, generation) from e
        return int(blob.generation)

    def _versions(self) -> list[str]:
        from google.api_core import exceptions as gexc

        from imagenette_drift.storage.gcs import missing_bucket

        prefix = f"{self.prefix}/" if self.prefix else ""
        with self.objects.errors("list", prefix):
            blobs = self.objects.bucket.client.list_blobs(self.bucket_name, prefix=prefix, delimiter="/")
            try:
                for _ in blobs.pages:
                    pass  # the folder names (`prefixes`) fill in as the pages are read
            except gexc.NotFound as e:  # a listing finds no bucket, never a missing prefix
                raise missing_bucket(self.bucket_name, self.location) from e
            return sorted(p.removeprefix(prefix).rstrip("/") for p in blobs.prefixes)

    def fetch(self, version: str, cache_dir: Path) -> Path:
        """Download (once, verified, cached by generation) `version`'s model.ckpt into `cache_dir`."""
        from imagenette_drift.storage.checkpoint import resolve_checkpoint

        return resolve_checkpoint(
            self._uri(f"{self.show(version).version}/{CHECKPOINT_NAME}"), cache_dir
        ).path

    def _uri(self, name: str) -> str:
        return self.objects.uri(name)
