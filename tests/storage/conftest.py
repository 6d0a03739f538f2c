"""A real gcp-storage-emulator for the storage tests (started once per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serve._gcs import StorageEmulator


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEmulator]:
    emulator = StorageEmulator(tmp_path_factory.mktemp("gcs") / "emulator.log").start()
    yield emulator
    emulator.stop()
