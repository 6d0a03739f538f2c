"""The benchmarks' own logic: the serving benchmark end to end (real servers on loopback, real uploads, a non-200
stops it, figures that add up), and the leaderboard table that pools seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import cold_start  # noqa: E402
import leaderboard  # noqa: E402
import serve_bench  # noqa: E402


def _row(name: str, seed: int, epochs: int, top1: float) -> dict:
    return {
        "name": name,
        "seed": seed,
        "epochs": epochs,
        "test_top1": top1,
        "fit_wall_s": 400.0 + seed,
        "eval_size": 176,
        "commit": "abc1234",
    }


def test_leaderboard_table_pools_seeds_and_sorts_by_epochs_then_accuracy(tmp_path: Path) -> None:
    rows = [
        _row("sgd", 0, 5, 0.80),
        _row("muon-20ep", 0, 20, 0.93),
        _row("muon", 0, 5, 0.87),
        _row("muon-s1", 1, 5, 0.89),  # a seed tag pools with its recipe
    ]
    for row in rows:
        leaderboard.record(row, tmp_path, stem="leaderboard_gpu")
    assert json.loads((tmp_path / "leaderboard_gpu.json").read_text()) == rows
    lines = (tmp_path / "leaderboard_gpu.md").read_text().splitlines()
    assert lines[0].startswith("# Leaderboard protocol on one GPU")
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| recipe")]
    assert [line.split(" | ")[0] for line in table] == ["| muon", "| sgd", "| muon-20ep"]
    assert table[0] == "| muon | 5 | 176 | 2 | 88.00 ± 1.41 | s0: 87.00, s1: 89.00 | 400, 401 | abc1234 |"


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
    assert set(rounds) == {"baseline", "ours-default", "ours-bf16"}  # ours-default: no flags (--runtime auto)
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
    # Each server against its own runtime on ready batch-8 tensors, one ratio per round.
    assert set(summary["server_to_runtime"]) == {"ours-default", "ours-bf16"}
    assert all(len(v) == 2 and all(r > 0 for r in v) for v in summary["server_to_runtime"].values())


@pytest.mark.slow
def test_cold_start_times_both_trees_and_reads_the_workers_memory(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    output = tmp_path / "cold.json"
    cold_start.main(
        [
            "--checkpoint",
            str(trained_checkpoint),
            "--baseline",
            "HEAD",
            "--repeat",
            "1",
            "--output",
            str(output),
        ]
    )
    result = json.loads(output.read_text())
    assert len(result["runs"]) == 2 and all(len(runs) == 1 for runs in result["runs"].values())
    for name, (run,) in result["runs"].items():
        assert result["median"][name] == run
        # a worker holding torch, timm and a ResNet-18 is well over 100 MiB; /health took real time
        assert run["worker_rss_mib"] > 100 and 0 < run["health_s"] < 240 and run["cpu_s"] > 1
