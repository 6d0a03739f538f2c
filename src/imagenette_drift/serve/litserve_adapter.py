"""Every LitServe internal this package relies on, in one place, checked against the versions it supports.

LitServe 0.2.x has no public hooks for two things the server needs:
- a batching loop with another collection policy (`serve/batching.py`) must recognise the shutdown sentinel
  (`_SENTINEL_VALUE`) and stop its loop the way LitServe's loops do (`_StopLoopError`);
- answering HTTP while the model loads (so that `/health` says 503 instead of refusing connections) means not
  blocking in `LitServer.verify_worker_status`, which is also where LitServe reports a worker that failed to
  start; `LitServerStartingEarly` keeps that report.
It also swaps LitServe's no-op auth dependency (a plain function, which FastAPI runs on its thread pool: a
thread hop per request, about a quarter of the HTTP process's CPU time per /predict) for an async one.
`tests/serve/test_litserve_adapter.py` pins these names to `SUPPORTED_LITSERVE`: upgrading LitServe past it
fails that test first, pointing here.
"""

from __future__ import annotations

import logging
import threading
import time

import litserve as ls
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.server import no_auth
from litserve.utils import WorkerSetupStatus

SUPPORTED_LITSERVE = ">=0.2.19,<0.3"  # keep equal to pyproject.toml's litserve requirement
STOP_SENTINEL = _SENTINEL_VALUE  # what LitServe puts on a request queue to stop an inference loop
StopLoopError = _StopLoopError  # raised inside a loop's request collection to end the loop
POLL_S = 0.1

log = logging.getLogger(__name__)


async def _no_auth() -> None:
    return None


class WorkerStartError(RuntimeError):
    """An inference worker failed to start (or died), so LitServe shut the server down."""


class LitServerStartingEarly(ls.LitServer):
    """A `LitServer` that serves HTTP while its workers load, and still stops when one fails to load.

    LitServe's `verify_worker_status` blocks `run` until a worker is ready and raises if one fails. Here it
    returns at once (LitServe's `/health` already answers 503 until every worker is ready) and a thread watches
    the workers' setup status instead: a failure is logged as one clear line and LitServe's shutdown is
    triggered, after which `run` raises `WorkerStartError`.
    """

    failed_workers: tuple[str, ...] = ()

    def setup_auth(self, lit_api: ls.LitAPI | None = None):
        """LitServe's auth dependency; its no-op one as a coroutine, which FastAPI awaits on the event loop."""
        auth = super().setup_auth(lit_api)
        return _no_auth if auth is no_auth else auth

    def verify_worker_status(self) -> None:
        statuses = self.workers_setup_status
        threading.Thread(target=self._watch_setup, args=(statuses,), daemon=True, name="worker-setup").start()

    def _watch_setup(self, statuses) -> None:
        try:
            while True:
                current = dict(statuses)
                failed = tuple(sorted(name for name, s in current.items() if s == WorkerSetupStatus.ERROR))
                if failed:
                    self.failed_workers = failed
                    log.error(
                        "Inference worker(s) %s failed to load the model; shutting down.", ", ".join(failed)
                    )
                    self._shutdown_event.set()
                    return
                if current and all(s == WorkerSetupStatus.READY for s in current.values()):
                    return
                time.sleep(POLL_S)
        except (EOFError, OSError):  # the manager is gone: the server is already shutting down
            return

    def run(self, *args, **kwargs) -> None:
        """`LitServer.run`; raises `WorkerStartError` when a worker failed to start or died."""
        try:
            super().run(*args, **kwargs)
        except (EOFError, BrokenPipeError, ConnectionError) as e:
            # LitServe's worker monitor shut the manager down under `run` after a worker process exited.
            raise WorkerStartError(self._failure_message()) from e
        if self.failed_workers:
            raise WorkerStartError(self._failure_message())

    def _failure_message(self) -> str:
        if self.failed_workers:
            return (
                f"inference worker {', '.join(self.failed_workers)} failed to load the model (its error is "
                "logged above); check that the checkpoint loads with `imagenette predict`."
            )
        return "an inference worker died, so the server shut down; its error is logged above."
