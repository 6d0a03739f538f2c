"""The LitServe internals in `serve/litserve_adapter.py` exist as used, on the pinned LitServe versions; a worker
that cannot load the model stops a real server with a clear message."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import litserve
import pytest
import torch
from litserve.loops.base import LitLoop
from packaging.requirements import Requirement
from packaging.version import Version

from imagenette_drift.checkpoint import read_checkpoint
from imagenette_drift.serve import litserve_adapter
from tests.serve._server import ServeProcess

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_litserve_is_a_supported_one() -> None:
    pinned = Requirement(re.search(r'"(litserve[^"]*)"', (REPO / "pyproject.toml").read_text()).group(1))
    assert str(pinned.specifier) == str(
        Requirement(f"litserve{litserve_adapter.SUPPORTED_LITSERVE}").specifier
    )
    assert Version(litserve.__version__) in pinned.specifier, (
        f"litserve {litserve.__version__} is outside {pinned.specifier}: re-check serve/litserve_adapter.py"
    )


def test_the_private_names_behave_as_the_adapter_uses_them() -> None:
    # The sentinel is a 4-tuple that LitServe's own loops compare request-queue items against.
    assert litserve_adapter.STOP_SENTINEL == (None, None, None, None)
    assert "_SENTINEL_VALUE" in inspect.getsource(LitLoop) or "_SENTINEL_VALUE" in inspect.getsource(
        inspect.getmodule(LitLoop)
    )
    assert issubclass(litserve_adapter.StopLoopError, Exception)
    # `run` calls `verify_worker_status()` after launching the workers and before starting uvicorn, and the
    # setup status lives in `workers_setup_status`; shutdown waits on `_shutdown_event`.
    run_source = inspect.getsource(litserve.LitServer.run)
    assert run_source.index("launch_inference_worker") < run_source.index("self.verify_worker_status()")
    assert run_source.index("self.verify_worker_status()") < run_source.index("self._start_server(")
    assert "self._shutdown_event.wait()" in run_source
    manager_source = inspect.getsource(litserve.LitServer._init_manager)
    assert "self.workers_setup_status" in manager_source and "self._shutdown_event" in manager_source


class _Echo(litserve.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def predict(self, x):
        return x


def test_the_no_op_auth_dependency_runs_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(litserve.server, "LIT_SERVER_API_KEY", None)
    server = litserve_adapter.LitServerStartingEarly(_Echo())
    assert inspect.iscoroutinefunction(server.setup_auth())  # FastAPI awaits it: no thread-pool hop
    monkeypatch.setattr(litserve.server, "LIT_SERVER_API_KEY", "secret")
    assert server.setup_auth() is litserve.server.api_key_auth  # a configured API key still applies


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_stops_the_server(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = read_checkpoint(trained_checkpoint)
    checkpoint["state_dict"] = {key: value.flatten()[:1] for key, value in checkpoint["state_dict"].items()}
    broken = tmp_path / "broken.ckpt"  # its card reads fine; its weights have the wrong shapes
    torch.save(checkpoint, broken)
    server = ServeProcess(broken, tmp_path / "server.log", "--cache_dir", str(tmp_path / "cache")).start()
    try:
        code = server.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running with a worker that failed to load:\n{server.log()[-2000:]}")
    finally:
        server.stop()
    log = server.log()
    assert code == 1, log[-2000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("imagenette serve: error: inference worker") and "failed to load the model" in last
