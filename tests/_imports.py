"""Which modules real processes import: the `_probe/sitecustomize.py` recorder and its logs (test helper)."""

from __future__ import annotations

import os
from pathlib import Path

PROBE = Path(__file__).resolve().parent / "_probe"
# The training stack that serving and monitoring must not load: Lightning (either distribution),
# torchmetrics, the W&B client, and the ImageNet-C corruption adapter.
TRAINING_STACK = ("lightning", "pytorch_lightning", "torchmetrics", "wandb", "imagenette_drift.corruptions")


def probe_env(log_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with the import probe switched on, logging under `log_dir`."""
    env = dict(os.environ if env is None else env)
    log_dir.mkdir(parents=True, exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROBE), env.get("PYTHONPATH", "")) if p)
    env["IMAGENETTE_IMPORT_LOG_DIR"] = str(log_dir)
    return env


def imported_modules(log_dir: Path) -> dict[int, set[str]]:
    """Modules each process imported, by pid."""
    return {int(path.stem): set(path.read_text().split()) for path in log_dir.glob("*.txt")}


def training_stack(modules: set[str]) -> list[str]:
    """The modules of the training stack among `modules`."""
    return sorted(m for m in modules if any(m == t or m.startswith(f"{t}.") for t in TRAINING_STACK))
