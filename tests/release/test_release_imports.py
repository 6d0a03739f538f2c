"""The release side (the gate's production window, export-labelled) loads the inference core, not training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._imports import imported_modules, probe_env, training_stack

RELEASE = [
    "imagenette_drift.inference_log.reader",
    "imagenette_drift.release.canary_log",
    "imagenette_drift.release.window",
    "imagenette_drift.release.production",
    "imagenette_drift.release.labelled",
    "imagenette_drift.commands.gate",
    "imagenette_drift.commands.export_labelled",
]


def test_the_release_modules_import_no_training_stack(tmp_path: Path) -> None:
    logs = tmp_path / "imports"
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    subprocess.run([sys.executable, "-c", code, *RELEASE], env=probe_env(logs), check=True, timeout=300)
    (modules,) = imported_modules(logs).values()
    assert set(RELEASE) <= modules and "torch" in modules and "pyarrow" in modules
    assert training_stack(modules) == []
