"""Parse `gs://BUCKET/OBJECT` and `gs://BUCKET[/PREFIX]` locations."""

from __future__ import annotations

from typing import Final

GS_PREFIX: Final = "gs://"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/path/to/object` -> (bucket, object name); ValueError for anything else."""
    bucket, _, name = uri.removeprefix(GS_PREFIX).partition("/")
    if not uri.startswith(GS_PREFIX) or not bucket or not name or name.endswith("/"):
        raise ValueError(
            f"{uri!r} is not a GCS object URI; expected gs://BUCKET/OBJECT (e.g. gs://models/last.ckpt)."
        )
    return bucket, name


def parse_gs_prefix(location: str) -> tuple[str, str]:
    """`gs://bucket[/some/prefix/]` -> (bucket, prefix without surrounding slashes); ValueError otherwise."""
    bucket, _, prefix = location.removeprefix(GS_PREFIX).partition("/")
    if not location.startswith(GS_PREFIX) or not bucket:
        raise ValueError(f"{location!r} is not a GCS location; expected gs://BUCKET or gs://BUCKET/PREFIX.")
    return bucket, prefix.strip("/")
