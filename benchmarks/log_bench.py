"""What the inference log costs: `imagenette serve` with and without `--log`, side by side, same checkpoint.

Both servers stay up and take turns, round after round (the load generator and drive loop of serve_bench.py):
throughput at concurrency 8 and p50 latency at concurrency 1, paired by round. Targets: at most 3% throughput
lost, at most 0.5 ms added to p50. Then the storage cost: bytes per record of the files the logging server wrote,
and of the same records re-encoded as one file of `--log-flush-records` rows (the steady-state file size).

    .venv/bin/python benchmarks/log_bench.py --checkpoint outputs/quickstart/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import BIN, REPO, drive, free_port, start, stop

from imagenette_drift.inference_log.writer import _parquet_bytes
from imagenette_drift.io import write_text_atomic

TARGET_THROUGHPUT_LOSS = 0.03
TARGET_P50_ADDED_MS = 0.5
TARGET_BYTES_PER_RECORD = 1.5 * 1024


def serve_command(args, port: int, log: Path | None) -> list[str]:
    command = [
        str(BIN / "imagenette"), "serve", "--checkpoint", str(args.checkpoint),
        "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
        "--runtime", args.runtime, "--log-level", "warning", "--cache-dir", str(args.work_dir / "cache"),
    ]  # fmt: skip
    if log is not None:
        command += ["--log", str(log), "--log-flush-records", str(args.log_flush_records)]
    return command


def storage(log: Path, flush_records: int) -> dict[str, float]:
    """Bytes per record of the written files, and of one file of `flush_records` rows re-encoded alike."""
    files = sorted((log / "predictions").rglob("*.parquet"))
    if not files:
        raise RuntimeError(f"the logging server wrote no files under {log}")
    n_rows = sum(pq.read_metadata(path).num_rows for path in files)
    n_bytes = sum(path.stat().st_size for path in files)
    table = pa.concat_tables(pq.read_table(path) for path in files)
    while len(table) < flush_records:
        table = pa.concat_tables([table, table])
    full = len(_parquet_bytes(table.slice(0, flush_records)))
    return {
        "files": len(files),
        "records": n_rows,
        "bytes_per_record_written": n_bytes / n_rows,
        "bytes_per_record_full_file": full / flush_records,
        "full_file_records": flush_records,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--images", type=Path, default=REPO / "data/sample/imagenette2-160/val")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per level and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each drives both servers in turn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server's worker")
    parser.add_argument("--runtime", default="torch", choices=["torch", "bf16", "onnx"])
    parser.add_argument("--log-flush-records", type=int, default=1000)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="logs and the written log (default: a temp dir)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/log_bench.json")
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="log_bench-"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    images = [path.read_bytes() for path in sorted(args.images.rglob("*.JPEG"))]
    log = args.work_dir / "inference-log"
    servers = {}
    for name, target in (("no-log", None), ("log", log)):
        port = free_port()
        servers[name] = (serve_command(args, port, target), f"http://127.0.0.1:{port}")
    print(
        f"{len(images)} images, {args.requests} requests per level, {args.repeat} rounds, runtime {args.runtime}, "
        f"{args.threads} thread(s) per server; log at {log}"
    )
    levels = {"c8": 8, "c1": 1}
    runs: dict[str, dict[str, list[dict]]] = {name: {level: [] for level in levels} for name in servers}
    processes = {}
    try:
        for name, (command, url) in servers.items():
            processes[name] = start(command, url, args.threads, args.work_dir / f"{name}.log")
        for round_ in range(args.repeat):
            for level, concurrency in levels.items():
                for name, (_, url) in servers.items():
                    result = drive(url, images, concurrency, args.requests)
                    runs[name][level].append(result)
                    print(
                        f"round {round_ + 1} {name:<7} c={concurrency} {result['req_per_s']:6.1f} req/s  "
                        f"p50 {result['p50_ms']:6.2f} ms",
                        flush=True,
                    )
    finally:
        for process in processes.values():
            stop(process)  # SIGTERM: the logging server flushes its buffer

    pairs8 = list(zip(runs["log"]["c8"], runs["no-log"]["c8"], strict=True))
    pairs1 = list(zip(runs["log"]["c1"], runs["no-log"]["c1"], strict=True))
    loss = [1 - a["req_per_s"] / b["req_per_s"] for a, b in pairs8]
    added = [a["p50_ms"] - b["p50_ms"] for a, b in pairs1]
    med = {
        name: {
            level: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for level, rs in by.items()
        }
        for name, by in runs.items()
    }
    store = storage(log, args.log_flush_records)
    print(
        f"\nmedians over {args.repeat} rounds (this 2-core machine is shared: expect ~10% run-to-run noise)"
    )
    print(
        f"  throughput c=8: no-log {med['no-log']['c8']['req_per_s']:.1f} req/s, "
        f"log {med['log']['c8']['req_per_s']:.1f} req/s; loss paired by round {statistics.median(loss):+.1%} "
        f"[{min(loss):+.1%}, {max(loss):+.1%}] (target <= {TARGET_THROUGHPUT_LOSS:.0%})"
    )
    print(
        f"  p50 c=1: no-log {med['no-log']['c1']['p50_ms']:.2f} ms, log {med['log']['c1']['p50_ms']:.2f} ms; "
        f"added {statistics.median(added):+.2f} ms [{min(added):+.2f}, {max(added):+.2f}] "
        f"(target <= {TARGET_P50_ADDED_MS} ms)"
    )
    print(
        f"  storage: {store['records']} records in {store['files']} files, "
        f"{store['bytes_per_record_written']:.0f} B/record as written; "
        f"{store['bytes_per_record_full_file']:.0f} B/record in a {args.log_flush_records}-record file "
        f"(target <= {TARGET_BYTES_PER_RECORD:.0f} B)"
    )
    summary = {
        "machine_note": "2 shared cores; other jobs may have run at the same time",
        "runtime": args.runtime,
        "threads": args.threads,
        "requests": args.requests,
        "repeat": args.repeat,
        "medians": med,
        "throughput_loss_c8": {"median": statistics.median(loss), "rounds": loss},
        "p50_added_ms_c1": {"median": statistics.median(added), "rounds": added},
        "storage": store,
        "targets": {
            "throughput_loss_c8": TARGET_THROUGHPUT_LOSS,
            "p50_added_ms_c1": TARGET_P50_ADDED_MS,
            "bytes_per_record": TARGET_BYTES_PER_RECORD,
        },
        "rounds": runs,
    }
    write_text_atomic(args.output, json.dumps(summary, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
