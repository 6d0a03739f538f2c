"""The serving benchmark runs end to end: real servers on loopback, real uploads (a non-200 stops it), figures
that add up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import serve_bench  # noqa: E402


@pytest.mark.slow
def test_serve_bench_drives_both_servers_and_pairs_rounds(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    serve_bench.main(
        [
            "--checkpoint",
            str(trained_checkpoint),
            "--images",
            str(sample_root / "val"),
            "--concurrency",
            "1",
            "4",
            "--requests",
            "12",
            "--repeat",
            "2",
            "--threads",
            "1",
            "--runtimes",
            "bf16",
            "--log-dir",
            str(tmp_path / "logs"),
            "--output",
            str(output),
        ]
    )
    summary = json.loads(output.read_text())
    rounds = summary["rounds"]
    assert set(rounds) == {"baseline", "ours-bf16"}
    for name in rounds:
        assert set(rounds[name]) == {"1", "4"}
        assert all(len(runs) == 2 for runs in rounds[name].values())
        assert all(
            run["req_per_s"] > 0 and run["p50_ms"] <= run["p99_ms"]
            for r in rounds[name].values()
            for run in r
        )
    for level in ("1", "4"):
        ours, base = rounds["ours-bf16"][level], rounds["baseline"][level]
        expected = [o["req_per_s"] / b["req_per_s"] for o, b in zip(ours, base, strict=True)]
        assert summary["paired_ratios"]["ours-bf16"][level]["throughput"] == pytest.approx(expected)
        medians = summary["results"]["ours-bf16"][level]
        assert medians["req_per_s"] == pytest.approx(sum(r["req_per_s"] for r in ours) / 2)  # median of two
