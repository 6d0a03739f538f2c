"""Fixtures of the release tests: a clearly worse real checkpoint, and a GCS emulator with a bucket."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import quickstart_args
from tests.serve._gcs import StorageEmulator

BUCKET = "registry"
PRECONDITION_EMULATOR = Path(__file__).with_name("_emulator_with_preconditions.py")


@pytest.fixture(scope="session")
def worse_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real quickstart fit stopped after one training batch: the same network, barely trained."""
    from imagenette_drift.cli import cli_main

    run_dir = tmp_path_factory.mktemp("worse")
    cwd = Path.cwd()
    os.chdir(run_dir)
    try:
        cli_main(quickstart_args("fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1"))
    finally:
        os.chdir(cwd)
    return run_dir / "outputs" / "quickstart" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEmulator]:
    """gcp-storage-emulator honouring `ifGenerationMatch` as GCS does (see _emulator_with_preconditions.py)."""
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    emulator = StorageEmulator(log, launcher=(sys.executable, str(PRECONDITION_EMULATOR))).start()
    emulator.client().create_bucket(BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture
def use_emulator(gcs: StorageEmulator, monkeypatch: pytest.MonkeyPatch) -> StorageEmulator:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    return gcs
