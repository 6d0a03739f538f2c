"""Throughput and latency of `imagenette serve` against the baseline FastAPI app, on loopback, same checkpoint.

Each server runs alone (one after the other, never both busy at once) with the same thread budget, and is
driven with the same real images at each concurrency level. Prints req/s and p50/p95/p99 latency for both, and
the ratios; `--output` also writes them as JSON.

    .venv/bin/python benchmarks/serve_bench.py --checkpoint outputs/quickstart/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from imagenette_drift.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], url: str, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"not healthy: {command}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def drive(url: str, images: Sequence[bytes], concurrency: int, n_requests: int) -> dict[str, float]:
    """Send `n_requests` uploads from `concurrency` client threads; return req/s and latency percentiles (ms)."""
    local = threading.local()

    def one(i: int) -> float:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start_t = time.perf_counter()
        reply = session.post(
            f"{url}/predict", files={"file": ("image.jpg", images[i % len(images)])}, timeout=120
        )
        elapsed = time.perf_counter() - start_t
        if reply.status_code != 200:
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text}")
        return elapsed

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(2 * concurrency, n_requests))))  # warm up connections and caches
        began = time.perf_counter()
        latencies = sorted(pool.map(one, range(n_requests)))
        wall = time.perf_counter() - began
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "req_per_s": n_requests / wall,
        "p50_ms": 1000 * quantiles[49],
        "p95_ms": 1000 * quantiles[94],
        "p99_ms": 1000 * quantiles[98],
    }


def run_server(name: str, command: list[str], url: str, args, images: Sequence[bytes]) -> dict[int, dict]:
    process = start(command, url, args.threads, args.log_dir / f"{name}.log")
    try:
        results = {}
        for concurrency in args.concurrency:
            results[concurrency] = drive(url, images, concurrency, args.requests)
            print(f"  {name:<12} c={concurrency:<3} {_row(results[concurrency])}", flush=True)
        return results
    finally:
        stop(process)


def _row(r: dict) -> str:
    return f"{r['req_per_s']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--images", type=Path, default=REPO / "data/sample/imagenette2-160/val")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per concurrency level")
    parser.add_argument(
        "--threads", type=int, default=2, help="thread budget of each server (workers x threads)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="our server's inference workers (each gets threads // workers)"
    )
    parser.add_argument("--runtimes", nargs="+", default=["onnx", "torch"], choices=["onnx", "bf16", "torch"])
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    parser.add_argument("--log-dir", type=Path, default=REPO / "outputs/serve_bench")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    images = [path.read_bytes() for path in sorted(args.images.rglob("*.JPEG"))]
    print(f"{len(images)} images, {args.requests} requests per level, {args.threads} threads per server")

    port = free_port()
    results = {
        "baseline": run_server(
            "baseline",
            [
                str(BIN / "python"),
                str(REPO / "benchmarks/baseline_server.py"),
                "--checkpoint",
                str(args.checkpoint),
                "--port",
                str(port),
                "--threads",
                str(args.threads),
            ],
            f"http://127.0.0.1:{port}",
            args,
            images,
        )
    }
    for runtime in args.runtimes:
        port = free_port()
        results[f"ours-{runtime}"] = run_server(
            f"ours-{runtime}",
            [
                str(BIN / "imagenette"),
                "serve",
                "--checkpoint",
                str(args.checkpoint),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--threads",
                str(max(1, args.threads // args.workers)),
                "--runtime",
                runtime,
                "--max-batch-size",
                str(args.max_batch_size),
                "--batch-timeout",
                str(args.batch_timeout),
                "--log-level",
                "warning",
                "--cache-dir",
                str(args.log_dir / "cache"),
            ],
            f"http://127.0.0.1:{port}",
            args,
            images,
        )
    print("\nratios to the baseline (throughput: higher is better; p50: lower is better)")
    base = results["baseline"]
    for name, by_level in results.items():
        if name == "baseline":
            continue
        for concurrency, r in by_level.items():
            b = base[concurrency]
            print(
                f"  {name:<12} c={concurrency:<3} throughput x{r['req_per_s'] / b['req_per_s']:.2f}  "
                f"p50 x{r['p50_ms'] / b['p50_ms']:.2f}  p99 x{r['p99_ms'] / b['p99_ms']:.2f}"
            )
    if args.output:
        summary = {"threads": args.threads, "requests": args.requests, "results": results}
        write_text_atomic(args.output, json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
