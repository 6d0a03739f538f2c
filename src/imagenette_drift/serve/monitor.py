"""The server's single online drift monitor, fed by every inference worker through a multiprocessing queue.

Inference workers (separate processes, possibly several) `publish` each batch's embeddings; the API-server
process runs one `DriftHub` thread that feeds them, in arrival order, to one `OnlineDriftMonitor` (which is not
thread-safe, so every access holds the hub's lock). The hub also counts batch sizes for `/metrics`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from typing import Any

import numpy as np
import torch

from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)


class EventChannel:
    """What an inference worker needs to publish batches: a queue and a count of images sent.

    Created in the main process before the workers start; picklable into spawned workers.
    """

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.sent = ctx.Value("q", 0)

    def publish(self, features: np.ndarray) -> None:
        """Called by a worker after each forward pass, before it answers the requests."""
        with self.sent.get_lock():
            self.sent.value += len(features)
        self.queue.put(features)


def drift_disabled_reason(drift_state: dict[str, Any] | None) -> str | None:
    """Why the checkpoint's card cannot drive the online monitor, or None when it can."""
    if drift_state is None:
        return "the checkpoint has no drift reference (train with the DriftCallback to store one)"
    if drift_state.get("online") is None:
        return "the checkpoint's drift reference has no online monitor (its reference set was too small)"
    return None


class DriftHub:
    """Consumes worker events in the API-server process and answers `/drift` from one monitor."""

    def __init__(
        self, drift_state: dict[str, Any] | None, channel: EventChannel, metrics: ServerMetrics
    ) -> None:
        self.reason = drift_disabled_reason(drift_state)
        self._online_state = None if self.reason else drift_state["online"]
        self.channel = channel
        self.metrics = metrics
        self._lock = threading.Lock()
        self._monitor: OnlineDriftMonitor | None = None
        self._consumed = 0
        self._pid: int | None = None

    def ensure_started(self) -> None:
        """Start the consumer thread in this process (once; the API server is a fork of the main process)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._online_state is not None:
                # The monitor's kernel rows are small: one thread, so that this process never spins a
                # second OpenMP thread against the inference workers for the same cores.
                torch.set_num_threads(1)
                self._monitor = OnlineDriftMonitor.from_state_dict(self._online_state)
            threading.Thread(target=self._consume, name="drift-hub", daemon=True).start()
            self._pid = os.getpid()

    def _consume(self) -> None:
        while True:
            features = self.channel.queue.get()
            self.metrics.observe_batch(len(features))
            with self._lock:
                if self._monitor is not None:
                    try:
                        self._monitor.update(torch.from_numpy(features))
                    except Exception:  # a monitor bug must not stop serving; it shows in the logs
                        log.exception("Online drift monitor update failed")
                self._consumed += len(features)

    def status(self, wait_s: float = 2.0) -> dict[str, Any]:
        """The `/drift` JSON, after waiting (briefly) for events already published to be consumed."""
        self.ensure_started()
        deadline = time.monotonic() + wait_s
        while self._consumed < self.channel.sent.value and time.monotonic() < deadline:
            time.sleep(0.005)
        with self._lock:
            if self._monitor is None:
                return {
                    "enabled": False,
                    "reason": self.reason,
                    "images_seen": self._consumed,
                    "window_size": None,
                    "window_filled": False,
                    "statistic": None,
                    "threshold": None,
                    "drifting": False,
                    "drifting_since": None,
                }
            status = self._monitor.status
            return {
                "enabled": True,
                "images_seen": status.n_seen,
                "window_size": self._monitor.window_size,
                "window_filled": status.window_filled,
                "statistic": status.statistic,
                "threshold": status.threshold,
                "drifting": status.drifting,
                "drifting_since": status.drifting_since,
            }
