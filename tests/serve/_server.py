"""Start `imagenette serve` as a real subprocess on a free loopback port, and stop it (test helper)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

IMAGENETTE = Path(sys.executable).with_name("imagenette")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s:\n{log.read_text()[-3000:]}")


class ServeProcess:
    """`imagenette serve --ckpt_path ... --host 127.0.0.1 --port P` with one thread, logging to a file."""

    def __init__(
        self, checkpoint: str | Path, log_path: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = [
            str(IMAGENETTE),
            "serve",
            "--ckpt_path",
            str(checkpoint),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "1",
            "--log_level",
            "warning",
            *args,
        ]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> ServeProcess:
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        return self

    def wait_healthy(self, timeout: float = 90.0) -> ServeProcess:
        """Poll GET /health until 200; fail with the log if the process exits or time runs out."""
        self._log.flush()
        wait_for_http(f"{self.url}/health", self.process, self.log_path, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def pids(self) -> list[int]:
        """The server's process and its children (API server, inference workers)."""
        import psutil

        root = psutil.Process(self.process.pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # workers left in our session, if any
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> ServeProcess:
        return self.start().wait_healthy()

    def __exit__(self, *exc: object) -> None:
        self.stop()
