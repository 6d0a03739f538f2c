"""A real gcp-storage-emulator on loopback, started and stopped by tests (test helper)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.serve._server import free_port

EMULATOR = Path(sys.executable).with_name("gcp-storage-emulator")


class StorageEmulator:
    """`gcp-storage-emulator start --in-memory` on a free port; `host` goes in STORAGE_EMULATOR_HOST."""

    def __init__(self, log_path: Path, launcher: tuple[str, ...] = (str(EMULATOR),)) -> None:
        self.launcher = launcher  # the emulator's executable (a wrapper script: python + its path)
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> StorageEmulator:
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        command = [
            *self.launcher,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
            "-q",
        ]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"emulator exited: {self.log_path.read_text()}") from None
                time.sleep(0.1)
        raise TimeoutError(f"emulator not listening after {timeout} s")

    def client(self):
        from google.cloud import storage

        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        try:
            return storage.Client()
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST")
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous

    def upload(self, bucket: str, name: str, data: bytes | Path) -> int:
        """Create the bucket if needed, upload, and return the object's generation."""
        client = self.client()
        target = client.bucket(bucket)
        if not target.exists():
            target = client.create_bucket(bucket)
        blob = target.blob(name)
        if isinstance(data, Path):
            blob.upload_from_filename(str(data))
        else:
            blob.upload_from_string(data)
        return int(target.get_blob(name).generation)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
            self._log.close()
