"""The registry in a local folder: `fcntl` locks and a generation counter give the champion's compare-and-swap."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from imagenette_drift.io import atomic_path, write_text_atomic
from imagenette_drift.registry.base import CHECKPOINT_NAME, Registry, RegistryError, conflict

LOCK_NAME = ".lock"


class LocalRegistry(Registry):
    """A registry under `root` (created on first write). Safe for concurrent processes on one machine (a
    POSIX advisory lock serialises the champion's read-compare-write); not for NFS without lock support."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry {self.root} is a file; pass a folder or a gs:// prefix.")

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock, also when the process dies

    def _put_new(self, name: str, source: Path) -> bool:
        dest = self.root / name
        if dest.exists():
            return False
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
        return True

    def _read(self, name: str) -> tuple[bytes, int] | None:
        with self._locked(exclusive=False):
            path = self.root / name
            if not path.is_file():
                return None
            return path.read_bytes(), self._generation(name)

    def _generation(self, name: str) -> int:
        counter = self.root / f".{name}.generation"
        return int(counter.read_text()) if counter.is_file() else (1 if (self.root / name).is_file() else 0)

    def _swap(self, name: str, data: bytes, generation: int) -> int:
        with self._locked(exclusive=True):
            current = self._generation(name)
            if current != generation:
                raise conflict(name, self.location, generation)
            with atomic_path(self.root / name) as tmp:
                tmp.write_bytes(data)
            write_text_atomic(self.root / f".{name}.generation", str(current + 1))
            return current + 1

    def _versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def fetch(self, version: str, cache_dir: Path | None = None) -> Path:
        return self.root / self.show(version).version / CHECKPOINT_NAME

    def _uri(self, name: str) -> str:
        return str(self.root / name)
