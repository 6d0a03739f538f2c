"""Shared fixtures: the real image sample shipped in the repo, the full data set when present, offline env."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO / "data" / "sample" / "imagenette2-160"
CONFIGS = REPO / "configs"
FULL_DATA = Path(
    os.environ.get("IMAGENETTE_FULL_DATA") or REPO.parent / "shared" / "data" / "imagenette2-160"
)

# No test may reach the network or a W&B account.
os.environ.update(
    {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
)
os.environ.pop("WANDB_API_KEY", None)
# Under pytest-xdist (`make test`: 2 workers on 2 cores) each worker, and every process it starts, computes with
# one thread: two processes with 2 OpenMP threads each on 2 cores slow each other down about tenfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    import torch

    torch.set_num_threads(1)
os.environ.pop("IMAGENETTE_DATA", None)


# The files that take longest (`make test --durations=15`), started first: `--dist loadfile` hands files to the
# two workers in collection order, so a long file collected last leaves the other worker idle at the end.
LONGEST_FIRST = (
    "release/test_gate_window.py",
    "drift/test_calibration.py",
    "release/test_loop_demo.py",
    "containers/test_serving_image.py",
    "containers/test_training_image.py",
    "serve/test_inference_log.py",
    "test_dvc.py",
    "test_hardware.py",
    "monitoring/test_engines_and_sinks.py",
    "serve/test_command.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        relative = Path(item.fspath).relative_to(tests_dir).as_posix()
        return LONGEST_FIRST.index(relative) if relative in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def under_ci() -> bool:
    """True where `CI` is set to true (GitHub Actions, `.ci/run`): there a missing tool or data set is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str, *, allow_module_level: bool = False) -> NoReturn:
    """Skip a test whose tool or data is missing; under `CI=true`, fail instead, so CI cannot go green by skipping.

    At module level (`allow_module_level=True`) the failure is a collection error, which fails the run too.
    """
    if under_ci():
        pytest.fail(f"{reason} [CI=true: required here, not skipped]", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def import_or_fail(module: str, reason: str, *, allow_module_level: bool = False) -> ModuleType:
    """`pytest.importorskip`, except that under `CI=true` a missing module fails (see `skip_or_fail`)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_or_fail(f"{reason} ({e})", allow_module_level=allow_module_level)


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real Imagenette sample in the repo (read-only: copy it before changing anything)."""
    return SAMPLE_ROOT


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the sample, for tests that corrupt or remove files."""
    dest = tmp_path / "imagenette2-160"
    shutil.copytree(SAMPLE_ROOT, dest)
    return dest


@pytest.fixture(scope="session")
def full_root() -> Path:
    """The complete Imagenette-160; tests using it skip where it is absent (and fail under CI=true)."""
    if not (FULL_DATA / "train").is_dir():
        skip_or_fail(
            f"full Imagenette-160 not found at {FULL_DATA} (set IMAGENETTE_FULL_DATA to run this test)"
        )
    return FULL_DATA


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so configs' relative `outputs/...` paths land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def quickstart_args(command: str, *extra: str) -> list[str]:
    """argv for `imagenette <command>` on the quickstart config and the shipped sample."""
    return [command, "--config", str(CONFIGS / "quickstart.yaml"), f"--data.root={SAMPLE_ROOT}", *extra]


@contextlib.contextmanager
def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder every pytest-xdist worker of this run shares, held under a file lock: yields (folder, whether it
    is new). The first worker builds what it holds while the others wait; they then read it (once per run)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temp folder, above each worker's own
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        done = folder / ".done"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        yield folder, not done.exists()
        done.touch()


def fit_once(tmp_path_factory: pytest.TempPathFactory, name: str, argv: list[str]) -> Path:
    """Run `imagenette <argv>` (a fit) in a shared folder once per test run and return that folder."""
    from imagenette_drift.cli import cli_main

    with shared_dir(tmp_path_factory, name) as (run_dir, new):
        if new:
            cwd = Path.cwd()
            os.chdir(run_dir)
            try:
                cli_main(argv)
            finally:
                os.chdir(cwd)
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fit the quickstart config once per session (2 epochs) and return its output folder.

    In fp32 whatever the CPU: bf16's numerics differ between CPUs with and without native bf16, and no test's
    verdict may depend on the machine. Its drift reference is the sample's 40 held-out images (windows of 20)."""
    argv = quickstart_args("fit", "--trainer.max_epochs=2", "--trainer.precision=32-true")
    return fit_once(tmp_path_factory, "trained", argv) / "outputs" / "quickstart"


@pytest.fixture(scope="session")
def full_epoch_checkpoint(full_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the real config on the full data at 96/112 px (a few minutes on 2 cores; once per run, shared
    by every worker): a model far better than the sample's, where a test needs a wide margin between models.
    `$IMAGENETTE_FULL_CHECKPOINT` replaces it."""
    if os.environ.get("IMAGENETTE_FULL_CHECKPOINT"):
        return Path(os.environ["IMAGENETTE_FULL_CHECKPOINT"])
    argv = [
        "fit",
        "--config",
        str(CONFIGS / "imagenette.yaml"),
        f"--data.root={full_root}",
        "--trainer.max_epochs=1",
        "--data.image_size=112",
        "--data.train_image_size=96",
        "--data.train_size_schedule=null",
        "--model.tta_flip=false",
    ]
    return (
        fit_once(tmp_path_factory, "full-epoch", argv)
        / "outputs"
        / "imagenette"
        / "checkpoints"
        / "last.ckpt"
    )


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def reference_80_checkpoint(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's checkpoint with its drift reference refitted, as the DriftCallback fits it, on the 80 real
    train images of the sample, windows of 20 (its held-out split of 8 allows an online window of 3 only); the
    card's estimation, familiarity and explanation fields are kept."""
    import torch

    from imagenette_drift.card import CHECKPOINT_KEY
    from imagenette_drift.checkpoint import load_for_inference
    from imagenette_drift.drift.reference import DriftReference, ReferenceSettings
    from imagenette_drift.embedding import embed_folder

    model = load_for_inference(trained_checkpoint)
    paths = sorted((SAMPLE_ROOT / "train").rglob("*.JPEG"))
    reference = DriftReference.fit(
        *embed_folder(model, paths), settings=ReferenceSettings(window_size=20, seed=0)
    )
    state = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    state[CHECKPOINT_KEY]["drift"] = reference.state_dict()
    path = tmp_path_factory.mktemp("reference-80") / "model.ckpt"
    torch.save(state, path)
    return path
