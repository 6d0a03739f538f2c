"""Fixtures for the Gradio app: the real `imagenette serve` server, the app itself, and scripted error APIs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.serve._server import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "app"
if str(APP_DIR) not in sys.path:  # the app's modules are flat files, as a Space runs them
    sys.path.insert(0, str(APP_DIR))

# One torch thread per subprocess: two cores are shared with pytest and with each other.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


@contextlib.contextmanager
def running(command: list[str], ready_url: str, log: Path, timeout: float, **env: str) -> Iterator[None]:
    """Run `command` in its own process group until the block ends, once `ready_url` answers 200."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**SUBPROCESS_ENV, **env},
            start_new_session=True,
        )
    try:
        wait_for_http(ready_url, process, log, timeout)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server's worker processes too
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def api_url(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `imagenette serve` on loopback, serving the session's checkpoint trained on the sample."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "imagenette_drift", "serve", "--ckpt_path", str(trained_checkpoint)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "1"]
    with running(command, f"{url}/health", log, timeout=180):
        yield url


@pytest.fixture(scope="session")
def app_url(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python app/app.py` in API mode against the real server, configured through its environment."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("app") / "app.log"
    command = [sys.executable, str(APP_DIR / "app.py")]
    with running(command, f"{url}/", log, timeout=90, API_URL=api_url, PORT=str(port), API_TIMEOUT="60"):
        yield url


@contextlib.contextmanager
def launched(backend) -> Iterator[str]:
    """The app's page for `backend`, served from a background thread of this process."""
    from app import build_demo

    demo = build_demo(backend)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@dataclass
class Reply:
    """One scripted answer: status, body (dict -> JSON, str -> text), seconds to hang before answering."""

    status: int = 200
    body: dict | str = field(default_factory=dict)
    delay: float = 0.0


class ScriptedApi:
    """A real HTTP server on loopback that answers from a script (test scaffolding, not our code).

    Requests take the replies in order; the last reply repeats. `requests` records each request's path.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[str] = []
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                index = len(api.requests)
                api.requests.append(self.path)
                reply = api.replies[min(index, len(api.replies) - 1)]
                if api._stop.wait(reply.delay):
                    return
                is_json = isinstance(reply.body, dict)
                data = (json.dumps(reply.body) if is_json else reply.body).encode()
                with contextlib.suppress(OSError):  # the client may have given up waiting
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json" if is_json else "text/html")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted_api() -> Iterator[Callable[..., ScriptedApi]]:
    """Build `ScriptedApi(*replies)` servers; all are shut down after the test."""
    servers: list[ScriptedApi] = []

    def build(*replies: Reply) -> ScriptedApi:
        servers.append(ScriptedApi(*replies))
        return servers[-1]

    yield build
    for server in servers:
        server.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"
