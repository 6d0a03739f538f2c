"""Throughput and latency of `imagenette serve` against the baseline FastAPI app, on loopback, same checkpoint.

All servers run side by side with the same thread budget, but only one is driven at a time: with the same real
images, at each concurrency level, server after server, for `--repeat` rounds. `ours-default` is `imagenette
serve` without a --runtime flag (`auto`; its /info names the runtime it chose). Each round also times every
runtime on ready tensors (batch 8, the eval transform already applied, same threads) while the servers idle.
Prints req/s and p50/p95/p99 latency per round and their medians, the ratios to the baseline paired by round
(this machine's run-to-run spread is about 10%, so one round proves little), and each server's throughput at
concurrency 8 as a fraction of its own runtime's batch-8 throughput (what the HTTP path keeps of the model's
speed); `--output` also writes them as JSON.

    .venv/bin/python benchmarks/serve_bench.py --checkpoint outputs/quickstart/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import http.client
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
from urllib.parse import urlsplit

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


def multipart(image: bytes, boundary: str = "imagenette-bench-boundary") -> tuple[bytes, str]:
    """One `file` field, encoded once up front so that the load generator spends no CPU on it per request."""
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def drive(url: str, images: Sequence[bytes], concurrency: int, n_requests: int) -> dict[str, float]:
    """Send `n_requests` uploads from `concurrency` client threads; return req/s and latency percentiles (ms).

    The client shares the cores with the server, so it is kept light: bodies are encoded once and each thread
    keeps one keep-alive `http.client` connection (`requests` costs several times more CPU per call).
    """
    parsed = urlsplit(url)
    bodies = [multipart(image) for image in images]
    local = threading.local()

    def one(i: int) -> float:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(
                parsed.hostname, parsed.port, timeout=120
            )
        body, content_type = bodies[i % len(bodies)]
        start_t = time.perf_counter()
        connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        reply = connection.getresponse()
        payload = reply.read()
        elapsed = time.perf_counter() - start_t
        if reply.status != 200:
            raise RuntimeError(f"{url} answered {reply.status}: {payload[:500]!r}")
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


def _row(r: dict) -> str:
    return f"{r['req_per_s']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--images", type=Path, default=REPO / "data/sample/imagenette2-160/val")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per concurrency level")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; each round drives every server at every level in turn"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="thread budget of each server (workers x threads)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="our server's inference workers (each gets threads // workers)"
    )
    parser.add_argument(
        "--runtimes",
        nargs="*",
        default=["bf16", "onnx"],
        choices=["onnx", "bf16", "torch", "cuda"],
        help="runtimes served with an explicit --runtime, besides the default server",
    )
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="extra `imagenette serve` flag, e.g. --serve-arg=--no_tta",
    )
    parser.add_argument("--log-dir", type=Path, default=REPO / "outputs/serve_bench")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    images = [path.read_bytes() for path in sorted(args.images.rglob("*.JPEG"))]
    print(
        f"{len(images)} images, {args.requests} requests per level, {args.repeat} rounds, "
        f"{args.threads} threads per server"
    )
    servers = {"baseline": _baseline_command(args), "ours-default": _our_command(args, None)}
    for runtime in args.runtimes:
        servers[f"ours-{runtime}"] = _our_command(args, runtime)
    served_runtime: dict[str, str] = {}

    # All servers stay up (idle ones use no CPU) and take turns, round after round, so that a slow spell of
    # the machine hits every server alike; the ratios below pair each round's figures.
    processes: dict[str, subprocess.Popen] = {}
    runs: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in args.concurrency} for name in servers}
    try:
        for name, (command, url) in servers.items():
            processes[name] = start(command, url, args.threads, args.log_dir / f"{name}.log")
            if name != "baseline":
                serving = requests.get(f"{url}/info", timeout=10).json()["serving"]
                served_runtime[name] = serving["runtime"]
                print(f"{name}: runtime {serving['runtime']} ({serving.get('runtime_reason', '')})")
        engines = RuntimeTimer(
            args.checkpoint,
            images,
            args.threads,
            args.log_dir / "cache",
            tta="--no_tta" not in args.serve_arg,
        )
        runtime_runs: dict[str, list[float]] = {
            runtime: [] for runtime in sorted(set(served_runtime.values()))
        }
        for round_ in range(args.repeat):
            print(f"round {round_ + 1}/{args.repeat}", flush=True)
            for runtime in runtime_runs:
                runtime_runs[runtime].append(engines.images_per_s(runtime))
                print(
                    f"  runtime {runtime:<6} ready tensors, batch 8: {runtime_runs[runtime][-1]:7.1f} img/s"
                )
            for concurrency in args.concurrency:
                for name, (_, url) in servers.items():
                    result = drive(url, images, concurrency, args.requests)
                    runs[name][concurrency].append(result)
                    print(f"  {name:<12} c={concurrency:<3} {_row(result)}", flush=True)
    finally:
        for process in processes.values():
            stop(process)

    results = {
        name: {c: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for c, rs in by_level.items()}
        for name, by_level in runs.items()
    }
    print(f"\nmedians over {args.repeat} rounds")
    for name, by_level in results.items():
        for concurrency, r in by_level.items():
            print(f"  {name:<12} c={concurrency:<3} {_row(r)}")
    print(
        "\nratios to the baseline, paired by round: median [min, max] (throughput: higher is better; p50: lower)"
    )
    ratios: dict[str, dict[int, dict]] = {}
    for name in results:
        if name == "baseline":
            continue
        ratios[name] = {}
        for concurrency in args.concurrency:
            pairs = list(zip(runs[name][concurrency], runs["baseline"][concurrency], strict=True))
            tput = [o["req_per_s"] / b["req_per_s"] for o, b in pairs]
            p50 = [o["p50_ms"] / b["p50_ms"] for o, b in pairs]
            ratios[name][concurrency] = {"throughput": tput, "p50": p50}
            print(
                f"  {name:<12} c={concurrency:<3} throughput x{statistics.median(tput):.2f} "
                f"[{min(tput):.2f}, {max(tput):.2f}]  p50 x{statistics.median(p50):.2f} "
                f"[{min(p50):.2f}, {max(p50):.2f}]"
            )
    level = 8 if 8 in args.concurrency else max(args.concurrency)
    print(
        f"\nserver at c={level} / its runtime's batch-8 throughput on ready tensors, paired by round: "
        "median [min, max]"
    )
    http_ratios: dict[str, list[float]] = {}
    for name, runtime in served_runtime.items():
        pairs = zip(runs[name][level], runtime_runs[runtime], strict=True)
        http_ratios[name] = [r["req_per_s"] / engine for r, engine in pairs]
        print(
            f"  {name:<12} ({runtime:<5}) x{statistics.median(http_ratios[name]):.2f} "
            f"[{min(http_ratios[name]):.2f}, {max(http_ratios[name]):.2f}]  "
            f"runtime {statistics.median(runtime_runs[runtime]):.1f} img/s"
        )
    if args.output:
        summary = {
            "threads": args.threads,
            "requests": args.requests,
            "repeat": args.repeat,
            "serve_args": args.serve_arg,
            "results": results,
            "rounds": runs,
            "paired_ratios": ratios,
            "served_runtime": served_runtime,
            "runtime_img_per_s": runtime_runs,
            "server_to_runtime": http_ratios,
        }
        write_text_atomic(args.output, json.dumps(summary, indent=2))


def _baseline_command(args) -> tuple[list[str], str]:
    port = free_port()
    command = [
        str(BIN / "python"),
        str(REPO / "benchmarks/baseline_server.py"),
        "--checkpoint",
        str(args.checkpoint),
        "--port",
        str(port),
        "--threads",
        str(args.threads),
    ]
    return command, f"http://127.0.0.1:{port}"


class RuntimeTimer:
    """Times a runtime on ready tensors: batches of 8 real images, already through the eval transform."""

    def __init__(
        self, checkpoint: Path, images: Sequence[bytes], threads: int, cache_dir: Path, tta: bool
    ) -> None:
        import dataclasses

        import torch

        from imagenette_drift.checkpoint import load_for_inference
        from imagenette_drift.serve.decode import decode_image

        torch.set_num_threads(threads)
        self.model = load_for_inference(checkpoint, map_location="cpu", channels_last=True)
        if not tta:  # as the servers were started (--serve-arg=--no-tta)
            self.model.card = dataclasses.replace(self.model.card, tta_flip=False)
        decoded = [self.model.transform(decode_image(data, 10**9)) for data in images]
        self.batches = [torch.stack(decoded[i : i + 8]) for i in range(0, len(decoded) - 7, 8)]
        self.threads = threads
        self.cache_dir = cache_dir
        self.runtimes: dict[str, object] = {}

    def images_per_s(self, runtime: str, seconds: float = 3.0) -> float:
        from imagenette_drift.serve.runtime import create_runtime

        if runtime not in self.runtimes:
            self.runtimes[runtime] = create_runtime(runtime, self.model, self.cache_dir, self.threads)
        engine = self.runtimes[runtime]
        for batch in self.batches[:2]:
            engine(batch)  # warm up
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            engine(self.batches[done % len(self.batches)])
            done += 1
        return 8 * done / (time.perf_counter() - began)


def _our_command(args, runtime: str | None) -> tuple[list[str], str]:
    port = free_port()
    command = [
        str(BIN / "imagenette"),
        "serve",
        "--ckpt_path",
        str(args.checkpoint),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--threads",
        str(max(1, args.threads // args.workers)),
        *(["--runtime", runtime] if runtime else []),
        "--max_batch_size",
        str(args.max_batch_size),
        "--batch_timeout",
        str(args.batch_timeout),
        "--log_level",
        "warning",
        "--cache_dir",
        str(args.log_dir / "cache"),
        *args.serve_arg,
    ]
    return command, f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    main()
