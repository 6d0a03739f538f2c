"""`imagenette gate` as a test runs it: the real CLI entry point, its exit code and what it printed."""

from __future__ import annotations

import pytest

from imagenette_drift.cli import cli_main
from tests.conftest import SAMPLE_ROOT


def run_gate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `imagenette gate --data.root=<sample> --threads=1 *args`."""
    capsys.readouterr()
    try:
        cli_main(["gate", f"--data.root={SAMPLE_ROOT}", "--threads=1", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
