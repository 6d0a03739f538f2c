"""Cold start of `imagenette serve`: seconds from launch to the first 200 from `/health`, and worker memory.

Runs the server of this working tree and of a baseline commit (its `src/` exported with `git archive`) on the
same checkpoint, alternating, `--repeat` times each, and prints both side by side with the median of each:

- `health_s`: wall seconds from starting the process to the first 200 from GET /health (polled every 50 ms);
  the worker has loaded and warmed the model by then.
- `cpu_s`: CPU seconds (user + system) the server's processes had used by then: on a busy shared machine
  this moves far less than wall time, which waits for the other jobs' turns on the cores.
- `worker_rss_mib`: resident memory of the inference worker (the spawned process that loads the model), read
  with psutil once /health answers 200.

Which modules each process loads (no Lightning, torchmetrics or W&B in serving) is checked by
`tests/test_inference_core.py`, not here.

    .venv/bin/python benchmarks/cold_start.py --checkpoint outputs/quickstart/checkpoints/last.ckpt \\
        --baseline main --output benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
SPAWNED = "multiprocessing.spawn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export_src(ref: str, dest: Path) -> Path:
    """`src/` of commit `ref`, extracted under `dest`; returns the folder to put on PYTHONPATH."""
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def inference_workers(root: psutil.Process) -> list[psutil.Process]:
    """The spawned children that run the LitAPI (not the resource tracker)."""
    workers = []
    for child in root.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if SPAWNED in cmdline and "resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def measure(src: Path, checkpoint: Path, workdir: Path, timeout: float = 240.0) -> dict[str, float]:
    """Start one server from `src`, time its first /health 200, read its worker's RSS, stop it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "imagenette_drift", "serve", "--ckpt_path", str(checkpoint)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--workers", "1"]
    command += ["--cache_dir", str(workdir / "cache"), "--log_level", "warning"]
    log = workdir / f"serve-{port}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            if time.perf_counter() - start > timeout:
                raise TimeoutError(
                    f"/health did not answer 200 within {timeout} s:\n{log.read_text()[-2000:]}"
                )
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        health_s = time.perf_counter() - start
        root = psutil.Process(process.pid)
        workers = inference_workers(root)
        if len(workers) != 1:
            raise RuntimeError(f"expected one inference worker, found {len(workers)}")
        return {
            "health_s": health_s,
            "cpu_s": _tree_cpu_seconds(root),
            "worker_rss_mib": workers[0].memory_info().rss / 2**20,
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tree_cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU seconds of `root` and its live descendants."""
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def git_describe(ref: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True
    )
    return out.stdout.strip() or ref


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .ckpt written by `imagenette fit`")
    parser.add_argument("--baseline", default="main", help="git commit or branch to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="starts per tree (alternating)")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint.resolve()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        tmp = Path(tmp)
        trees = {f"baseline {git_describe(args.baseline)}": export_src(args.baseline, tmp)}
        trees[f"current {git_describe('HEAD')}{'+' if _dirty() else ''}"] = REPO / "src"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name, src in trees.items():
                runs[name].append(measure(src, checkpoint, tmp))
    medians = {
        name: {key: statistics.median(run[key] for run in rows) for key in rows[0]}
        for name, rows in runs.items()
    }
    _print(runs, medians)
    result = {
        "checkpoint": str(args.checkpoint),
        "cpu": _cpu_name(),
        "command": "imagenette serve --threads 1 --workers 1 (OMP_NUM_THREADS=1)",
        "runs": runs,
        "median": medians,
    }
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _print(runs: dict[str, list[dict[str, float]]], medians: dict[str, dict[str, float]]) -> None:
    names = list(runs)
    print(f"{'':<22}" + "".join(f"{name:>28}" for name in names))
    rows = (
        ("health_s", "/health 200 (s)"),
        ("cpu_s", "CPU until then (s)"),
        ("worker_rss_mib", "worker RSS (MiB)"),
    )
    for key, label in rows:
        cells = [", ".join(f"{run[key]:.1f}" for run in runs[name]) for name in names]
        print(f"{label:<22}" + "".join(f"{cell:>28}" for cell in cells))
        print(f"{'  median':<22}" + "".join(f"{medians[name][key]:>28.1f}" for name in names))


def _dirty() -> bool:
    status = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True
    )
    return bool(status.stdout.strip())


def _cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), ""
    )
    return f"{model} ({os.cpu_count()} logical CPUs visible)"


if __name__ == "__main__":
    main()
