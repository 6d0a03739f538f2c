"""Download the official Imagenette-160 archive, check it, and unpack it without path traversal."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from imagenette_drift.errors import MissingDataError

IMAGENETTE_160_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_160_MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into `dest`, refusing members that would land outside it or are links."""
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            target = (dest / member.name).resolve()
            if not target.is_relative_to(dest):
                raise RuntimeError(
                    f"Refusing to extract {archive}: member {member.name!r} would be written outside {dest}."
                )
            if not (member.isfile() or member.isdir()):
                raise RuntimeError(
                    f"Refusing to extract {archive}: member {member.name!r} is a link or special file."
                )
        tar.extractall(dest, members=members, filter="data")


def download_archive(url: str, dest: Path, md5: str | None, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` atomically (temp file, then rename) and check its MD5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        if md5 is not None and (actual := md5sum(tmp)) != md5:
            raise RuntimeError(
                f"Checksum mismatch for {url}: expected md5 {md5}, got {actual}. "
                "The download is corrupt or the archive changed; delete it and retry."
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_imagenette(root: Path, url: str = IMAGENETTE_160_URL, md5: str | None = IMAGENETTE_160_MD5) -> Path:
    """Download and unpack Imagenette into `root` (the `imagenette2-160` folder itself); return `root`.

    The archive unpacks to a folder named after it; it is extracted next to `root` in a temporary folder and
    moved into place only when complete, so an interrupted run never leaves a half-written data set.
    """
    root = Path(root)
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    archive = parent / Path(url).name
    try:
        if not archive.exists() or (md5 is not None and md5sum(archive) != md5):
            download_archive(url, archive, md5)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise MissingDataError(_missing_data_message(root, f"downloading {url} failed ({e})")) from e
    with tempfile.TemporaryDirectory(dir=parent, prefix=".extract-") as tmp:
        safe_extract(archive, Path(tmp))
        unpacked = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(unpacked) != 1:
            raise RuntimeError(f"{archive} should hold one top-level folder, found {[p.name for p in unpacked]}.")
        unpacked[0].rename(root)
    archive.unlink()
    return root


def _missing_data_message(root: Path, reason: str) -> str:
    """One line naming the three ways to provide the data."""
    return (
        f"Imagenette-160 was not found at {root} and {reason}; pass --data.root=/path/to/imagenette2-160, "
        "set IMAGENETTE_DATA=/path/to/imagenette2-160, or put the unpacked folder at data/imagenette2-160 "
        "(or run once with network access to download it)."
    )
