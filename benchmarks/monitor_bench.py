"""Monitor throughput: `imagenette monitor`'s run over 1,000,000 logged records (D=512), DuckDB and Ray Data.

Writes N synthetic prediction records in the inference-log schema (v1; fp16 embeddings, 10-class softmax,
12 input statistics), as three replicas' files under the hive layout, then times one monitor run end to end
(listing, schema checks, reading, windowing, MMD with its permutation p-value plus the KS and label-shift tests
per window of 500, the window table and reports) for each engine on the same files. The reference is 1,000
in-distribution rows; the last 10% of the traffic is shifted, so drifting windows exist. The target is
DuckDB within 60 s on the project's 2-core machine; Ray Data (local, same CPUs) is the comparison.

Run: ``python benchmarks/monitor_bench.py [--records 1000000] [--threads 2] [--engines duckdb,ray]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from imagenette_drift.drift.mmd import MMDDriftDetector
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.univariate import ChiSquaredDriftDetector, KSDriftDetector
from imagenette_drift.inference_log.schema import PREDICTION_SCHEMA, file_name, partition_dir
from imagenette_drift.monitoring.service import Monitor, MonitorConfig
from imagenette_drift.monitoring.stats import WindowContext
from imagenette_drift.monitoring.windows import WindowSpec

DIM, CLASSES, STATS = 512, 10, 12
SHA = "b" * 64
WNIDS = [f"n{i:08d}" for i in range(CLASSES)]
TARGET_S = 60.0


def _features(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    embeddings = (rng.standard_normal((n, DIM), dtype=np.float32) + shift).astype("<f2")
    logits = rng.standard_normal((n, CLASSES), dtype=np.float32) * 2.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    stats = rng.random((n, STATS), dtype=np.float32) + shift
    return embeddings, probs.astype(np.float32), stats


def _list_array(matrix: np.ndarray) -> pa.ListArray:
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def _file(
    rng: np.random.Generator, first: int, n: int, t0: dt.datetime, shift: float, replica: str
) -> pa.Table:
    embeddings, probs, stats = _features(rng, n, shift)
    offsets = pa.py_buffer(np.arange(0, (n + 1) * DIM * 2, DIM * 2, dtype=np.int32).tobytes())
    emb = pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(embeddings.tobytes())])
    ts = np.datetime64(t0.replace(tzinfo=None), "us") + (np.arange(first, first + n) * 10_000).astype(
        "timedelta64[us]"
    )
    top = probs.argmax(axis=1)
    columns = {
        "request_id": pa.array([f"{i:012d}-{replica}" for i in range(first, first + n)]),
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "model_sha256": pa.array([SHA] * n),
        "replica_id": pa.array([replica] * n),
        "runtime": pa.array(["onnx"] * n),
        "predicted_wnid": pa.array(np.asarray(WNIDS)[top]),
        "confidence": pa.array(probs.max(axis=1)),
        "probs": _list_array(probs),
        "embedding": emb,
        "image_stats": _list_array(stats),
        "width": pa.array(np.full(n, 160, np.int32)),
        "height": pa.array(np.full(n, 160, np.int32)),
        "format": pa.array(["JPEG"] * n),
        "n_bytes": pa.array(np.full(n, 9000, np.int64)),
        "latency_ms": pa.array(np.full(n, 4.0, np.float32)),
        "knn_distance": pa.nulls(n, pa.float32()),
        "energy": pa.nulls(n, pa.float32()),
        "unfamiliar": pa.nulls(n, pa.bool_()),
        "image": pa.nulls(n, pa.binary()),
    }
    return pa.Table.from_pydict(columns, schema=PREDICTION_SCHEMA)


def write_log(root: Path, n_records: int, per_file: int, seed: int = 0) -> dict:
    """Write the synthetic log; return its size figures."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    replicas = ("rev1-a", "rev1-b", "rev1-c")
    n_files, total_bytes = 0, 0
    for k, first in enumerate(range(0, n_records, per_file)):
        n = min(per_file, n_records - first)
        shift = 0.15 if first >= 0.9 * n_records else 0.0
        table = _file(rng, first, n, t0, shift, replicas[k % 3])
        stamp = table["timestamp"][0].as_py()
        folder = root / partition_dir("predictions", stamp.date(), SHA)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(replicas[k % 3], stamp)
        pq.write_table(table, path)
        n_files += 1
        total_bytes += path.stat().st_size
    return {"files": n_files, "bytes": total_bytes, "bytes_per_record": total_bytes / n_records}


def reference(seed: int = 1) -> DriftReference:
    emb, probs, stats = _features(np.random.default_rng(seed), 1000)
    return DriftReference(
        mmd=MMDDriftDetector(torch.from_numpy(emb.astype(np.float32)).half(), n_permutations=100, seed=0),
        ks=KSDriftDetector(torch.from_numpy(probs).half()),
        chi2=ChiSquaredDriftDetector(torch.from_numpy(probs), num_classes=CLASSES),
        inputs=KSDriftDetector(torch.from_numpy(stats)),
        online=None,
        window_size=500,
        n_reference=1000,
    )


def time_engine(engine: str, log: Path, out: Path, context: WindowContext, threads: int) -> dict:
    config = MonitorConfig(str(log), out, WindowSpec.parse("500"), SHA, engine=engine, threads=threads)
    monitor = Monitor(config, context, [])  # no alert lines in the benchmark's output
    start, cpu = time.perf_counter(), time.process_time()
    status = monitor.run_once()
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    n = sum(w.n for w in status.windows)
    return {
        "engine": engine,
        "seconds": round(seconds, 2),
        "cpu_s_driver": round(cpu_s, 2),  # this process only (Ray's workers are other processes)
        "load_average_1m_after": round(os.getloadavg()[0], 1),
        "records": n,
        "records_per_s": round(n / seconds),
        "windows": len(status.windows),
        "drifting_windows": sum(w.drift for w in status.windows),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-file", type=int, default=5000, help="records per log file (a replica's flush)")
    parser.add_argument("--threads", type=int, default=2, help="torch and engine threads (Ray: num_cpus)")
    parser.add_argument("--engines", default="duckdb,ray")
    parser.add_argument("--workdir", type=Path, default=None, help="where the log goes (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/monitor_bench.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = round(os.getloadavg()[0], 1)
    work = Path(tempfile.mkdtemp(prefix="monitor-bench-", dir=args.workdir))
    try:
        start = time.perf_counter()
        sizes = write_log(work / "log", args.records, args.per_file)
        write_s = time.perf_counter() - start
        context = WindowContext(reference(), WNIDS)
        results = []
        for engine in args.engines.split(","):
            if engine == "ray":
                import ray

                ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
            results.append(time_engine(engine, work / "log", work / f"out-{engine}", context, args.threads))
            print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "records": args.records,
        "dim": DIM,
        "window": 500,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "load_average_1m_before": load_before,
        "log": {**sizes, "write_s": round(write_s, 1)},
        "target_s": TARGET_S,
        "engines": results,
    }
    print(f"{'engine':<8} {'seconds':>8} {'cpu s':>7} {'records/s':>10} {'windows':>8} {'load':>5}   target")
    for r in results:
        print(
            f"{r['engine']:<8} {r['seconds']:>8.1f} {r['cpu_s_driver']:>7.1f} {r['records_per_s']:>10,} "
            f"{r['windows']:>8} {r['load_average_1m_after']:>5}   {TARGET_S:.0f} s (DuckDB, 2 idle cores)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
