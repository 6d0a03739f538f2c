"""The `imagenette` CLI as the release tests run it: the real entry point, its exit code and what it printed."""

from __future__ import annotations

import pytest

from imagenette_drift.cli import cli_main
from tests.conftest import SAMPLE_ROOT


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `imagenette *argv`, run in this process."""
    capsys.readouterr()
    try:
        cli_main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_gate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`imagenette gate --data.root=<sample> --threads=1 *args`."""
    return run_cli(capsys, "gate", f"--data.root={SAMPLE_ROOT}", "--threads=1", *args)
