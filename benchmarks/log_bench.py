"""What the inference log costs: `imagenette serve` with and without `--log`, side by side, same checkpoint.

Both servers stay up and take turns, round after round (the load generator and drive loop of serve_bench.py):
throughput at concurrency 8 and p50 latency at concurrency 1, paired by round. Targets: at most 3% throughput
lost, at most 0.5 ms added to p50. Then the storage cost: bytes per record of the files the logging server wrote,
and of the same records re-encoded as one file of `--log_flush_records` rows (the steady-state file size).

    .venv/bin/python benchmarks/log_bench.py --checkpoint outputs/quickstart/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import BIN, REPO, drive, free_port, start, stop

from imagenette_drift.io import write_text_atomic

TARGET_THROUGHPUT_LOSS = 0.03
TARGET_P50_ADDED_MS = 0.5
TARGET_BYTES_PER_RECORD = 1.5 * 1024


def serve_command(args, port: int, log: Path | None) -> list[str]:
    command = [
        str(BIN / "imagenette"), "serve", "--ckpt_path", str(args.checkpoint),
        "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
        "--runtime", args.runtime, "--log_level", "warning", "--cache_dir", str(args.work_dir / "cache"),
    ]  # fmt: skip
    if log is not None:
        command += ["--log", str(log), "--log_flush_records", str(args.log_flush_records)]
    return command


def storage(log: Path) -> dict[str, float]:
    """Files and bytes per record the logging server wrote (its inputs repeat, so this compresses better than
    production traffic would: see `cpu_cost`'s figure on distinct images)."""
    files = sorted((log / "predictions").rglob("*.parquet"))
    if not files:
        raise RuntimeError(f"the logging server wrote no files under {log}")
    n_rows = sum(pq.read_metadata(path).num_rows for path in files)
    return {
        "files": len(files),
        "records": n_rows,
        "bytes_per_record_written": sum(path.stat().st_size for path in files) / n_rows,
    }


def cpu_cost(checkpoint: Path, images: list[bytes]) -> dict[str, float]:
    """CPU time the log adds per record, in-process (robust to a busy machine, unlike wall-clock latency), and
    bytes per record of one Parquet file holding the records of `images` (distinct images, as in production).

    Inference worker: the input statistics of each served image (timed here one image per call, the worst
    case: the worker makes one call per batch). Request path: the extra pickling of the worker's payload with
    its answer, and the API process's work when it sends the answer (request id into the JSON, queueing the
    record). Writer thread: Parquet encoding per record, off the request path.
    """
    import asyncio
    import datetime as dt
    import pickle

    import torch

    from imagenette_drift.checkpoint import load_for_inference
    from imagenette_drift.drift.image_stats import image_statistics
    from imagenette_drift.inference_log.sink import LocalSink
    from imagenette_drift.inference_log.writer import InferenceLogWriter
    from imagenette_drift.serve.api import ImagenetteAPI, _Input, _Output, prediction_json
    from imagenette_drift.serve.decode import open_image
    from imagenette_drift.serve.request_log import SCOPE_KEY, PredictionResponse, RequestContext

    torch.set_num_threads(1)
    model = load_for_inference(checkpoint)
    work = Path(tempfile.mkdtemp(prefix="log_cpu-"))
    n = len(images)
    writer = InferenceLogWriter(
        LocalSink(work / "log"),
        work / "spill",
        model.sha256,
        "bench",
        "torch",
        flush_records=n + 1,
        max_queue=n,
    )
    payloads, answers = [], []
    stats_s = 0.0
    for data in images:
        image, fmt = open_image(data, 40_000_000)
        x = model.transform(image)
        with torch.inference_mode():
            features, probs = model.embed_and_predict(x[None])
            began = time.thread_time()
            stats = image_statistics(x[None]).numpy()
            stats_s += time.thread_time() - began
        answer = prediction_json(probs[0].numpy(), model.card)
        source = _Input(x, image.shape[2], image.shape[1], fmt, len(data), None)
        output = _Output(probs[0].numpy(), features[0].numpy(), source, image_stats=stats[0])
        payloads.append(ImagenetteAPI._payload(output, answer))
        answers.append(answer)

    async def sink_message(message: dict) -> None:
        return None

    def request_path(with_log: bool) -> float:
        """CPU seconds per answer of this (the event loop's) thread alone."""
        began = time.thread_time()
        for payload, answer in zip(payloads, answers, strict=True):
            response = pickle.loads(pickle.dumps(PredictionResponse(answer, payload if with_log else None)))
            context = RequestContext(
                "id", dt.datetime.now(dt.UTC), time.perf_counter(), writer if with_log else None
            )
            asyncio.run(response({"type": "http", SCOPE_KEY: context}, None, sink_message))
        return (time.thread_time() - began) / n

    request_path(False)
    base = min(request_path(False) for _ in range(3))
    writer.start()
    clock = time.pthread_getcpuclockid(writer._thread.ident)
    began = time.clock_gettime(clock)
    logged = request_path(True)
    writer.flush(timeout=300)
    writer_s = time.clock_gettime(clock) - began  # the writer thread's own CPU time
    writer.close()
    files = list((work / "log" / "predictions").rglob("*.parquet"))
    return {
        "records": n,
        "files": len(files),
        "bytes_per_record": sum(path.stat().st_size for path in files) / n,
        "worker_stats_ms_per_record": 1e3 * stats_s / n,
        "request_path_added_us": 1e6 * (logged - base),
        "writer_thread_ms_per_record": 1e3 * writer_s / n,
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
        "--storage-images",
        type=Path,
        default=REPO.parent / "shared/data/imagenette2-160/val",
        help="distinct images for the bytes-per-record and CPU figures (default: the full validation set)",
    )
    parser.add_argument("--storage-records", type=int, default=500)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="logs and the written log (default: a temp dir)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/log_bench.json")
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="log_bench-"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    images = [path.read_bytes() for path in sorted(args.images.rglob("*.JPEG"))]
    load_before = os.getloadavg()[0]
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
    store = storage(log)
    folder = args.storage_images if args.storage_images.is_dir() else args.images
    paths = sorted(folder.rglob("*.JPEG"))
    step = max(1, len(paths) // args.storage_records)  # spread over every class
    distinct = [path.read_bytes() for path in paths[::step][: args.storage_records]]
    cpu = cpu_cost(args.checkpoint, distinct)
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
        f"  storage: {cpu['bytes_per_record']:.0f} B/record in one file of {cpu['records']} distinct images from "
        f"{folder} (target <= {TARGET_BYTES_PER_RECORD:.0f} B); the servers wrote {store['records']} records of "
        f"{len(images)} repeated images in {store['files']} files, {store['bytes_per_record_written']:.0f} B/record"
    )
    print(
        f"  CPU per record (in-process, thread CPU time): worker +{cpu['worker_stats_ms_per_record']:.2f} ms "
        f"(input statistics, one image per call); request path +{cpu['request_path_added_us']:.0f} us "
        f"(payload pickling, request id, queueing); writer thread {cpu['writer_thread_ms_per_record']:.2f} ms "
        "(Parquet), off the request path"
    )
    summary = {
        "machine_note": "2 shared cores; other jobs may have run at the same time",
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "runtime": args.runtime,
        "threads": args.threads,
        "requests": args.requests,
        "repeat": args.repeat,
        "medians": med,
        "throughput_loss_c8": {"median": statistics.median(loss), "rounds": loss},
        "p50_added_ms_c1": {"median": statistics.median(added), "rounds": added},
        "storage": store,
        "cpu_per_record": cpu,
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
