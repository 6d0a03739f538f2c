"""Write files atomically: to a temporary file next to the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process's umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path in `dest`'s folder; on success rename it to `dest`, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=dest.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file 0600; give the result the mode a plain open() would (0666 less umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write `text` to `dest` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
