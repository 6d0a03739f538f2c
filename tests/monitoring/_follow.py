"""Run `imagenette monitor --follow` as a real subprocess (test helper)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.serve._server import free_port, wait_for_http


@contextlib.contextmanager
def follow_monitor(log: Path, checkpoint: Path, out: Path, *extra: str, every: str = "1s") -> Iterator[str]:
    """Start the monitor service on a free port; yield its URL once `/status` has a first run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "imagenette_drift",
        "monitor",
        f"--log={log}",
        f"--ckpt_path={checkpoint}",
    ]
    command += [f"--out={out}", "--follow", f"--every={every}", f"--port={port}", "--threads=1", *extra]
    out.mkdir(parents=True, exist_ok=True)
    output = out.parent / f"{out.name}-service.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_for_http(f"{url}/health", process, output, timeout=120)
        deadline = time.monotonic() + 120
        while requests.get(f"{url}/status", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no first monitor run within 120 s:\n{output.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
