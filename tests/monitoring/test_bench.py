"""benchmarks/monitor_bench.py on a small log: synthetic records in the v1 schema, timed end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import monitor_bench


@pytest.mark.slow
def test_monitor_bench_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "monitor_bench.json"
    summary = monitor_bench.main(
        [
            "--records",
            "3000",
            "--per-file",
            "700",
            "--threads",
            "1",
            "--engines",
            "duckdb",
            "--output",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == summary
    (duck,) = summary["engines"]
    assert duck["records"] == 3000 and duck["windows"] == 6 and duck["seconds"] > 0
    assert summary["log"]["files"] == 5 and 1000 < summary["log"]["bytes_per_record"] < 2000
