"""The server's single online drift monitor, fed by every inference worker through a multiprocessing queue.

Inference workers (separate processes, possibly several) `publish` each batch's embeddings; the API-server
process runs one `DriftHub` thread that feeds them, in arrival order, to one `OnlineDriftMonitor` (which is not
thread-safe, so every access holds the hub's lock), and their softmax rows (and, when the card has corruption
signatures, input statistics) to one `LiveWindow`: the latest window's accuracy estimates, harm alert and, while
drifting, explanation. The hub also counts batch sizes for `/metrics`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch

from imagenette_drift.drift.live import LiveWindow
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.drift.reference_size import reference_size_problem
from imagenette_drift.serve.channel import EventChannel
from imagenette_drift.serve.metrics import ServerMetrics
from imagenette_drift.serve_contract import DriftStatus

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 1.0  # how long `/drift` waits for images already answered to reach the monitor
MAX_WAIT_S = 30.0  # the most `/drift?wait_s=` may ask for


def drift_disabled_reason(drift_state: dict[str, Any] | None) -> str | None:
    """Why the checkpoint's card cannot drive the online monitor, or None when it can."""
    if drift_state is None:
        return "the checkpoint has no drift reference (train with the DriftCallback to store one)"
    if drift_state.get("online") is None:
        return "the checkpoint's drift reference has no online monitor (its reference set was too small)"
    window = len(drift_state["online"]["window"])
    return reference_size_problem(int(drift_state["n_reference"]), window, tests=("mmd",))


class DriftHub:
    """Consumes worker events in the API-server process and answers `/drift` from one monitor."""

    def __init__(
        self,
        drift_state: dict[str, Any] | None,
        channel: EventChannel,
        metrics: ServerMetrics,
        live: LiveWindow | None = None,
    ) -> None:
        """Args:
        drift_state: the card's drift reference (None: monitoring off).
        live: the latest window's label-free accuracy estimates, harm alert and (while drifting) explanation,
            from the card's `estimation` and `explanation` fields (None: not reported).
        """
        self.reason = drift_disabled_reason(drift_state)
        self._online_state = None if self.reason else drift_state["online"]
        self.channel = channel
        self.metrics = metrics
        self._lock = threading.Lock()
        self._consumed_more = threading.Condition(self._lock)  # notified by the consumer after each batch
        self._monitor: OnlineDriftMonitor | None = None
        self._consumed = 0
        self._pid: int | None = None
        self._live = live

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
            try:
                features, probs, stats = self.channel.queue.get()
            except (EOFError, OSError):  # the queue closed: this process is shutting down
                return
            self.metrics.observe_batch(len(features))
            with self._lock:
                if probs is not None and self._live is not None:
                    self._live.add(probs, features, stats)
                if self._monitor is not None:
                    try:
                        self._monitor.update(torch.from_numpy(features))
                    except Exception:  # a monitor bug must not stop serving; it shows in the logs
                        log.exception("Online drift monitor update failed")
                self._consumed += len(features)
                self._consumed_more.notify_all()

    def _window_fields(self, drifting: bool) -> dict[str, Any]:
        """The `/drift` fields of the latest window: accuracy estimates, harm and (drifting) explanation."""
        if self._live is None:
            return {}
        return self._live.answer(drifting)

    def wait_consumed(self, timeout: float) -> bool:
        """Block until every image published so far (every answered `/predict`) has reached the monitor, or
        `timeout` seconds pass; True when it has. Returns at once when nothing is in flight (the usual case).

        A condition variable wakes the caller when the consumer thread catches up: no polling. Images published
        after the call do not extend the wait, so it is bounded by the consumer's lag even under load.
        """
        self.ensure_started()
        target = self.channel.sent.value
        with self._consumed_more:
            return self._consumed_more.wait_for(lambda: self._consumed >= target, timeout=max(0.0, timeout))

    def status(self, wait_s: float = DEFAULT_WAIT_S) -> DriftStatus:
        """The `/drift` answer. It first waits, up to `wait_s` seconds (at most `MAX_WAIT_S`), for the images of
        requests already answered to reach the monitor, so a client reads its own predictions in the counts;
        `GET /drift?wait_s=30` waits longer on a loaded machine, `?wait_s=0` not at all."""
        self.wait_consumed(min(wait_s, MAX_WAIT_S))
        with self._lock:
            if self._monitor is None:
                return DriftStatus.disabled(self.reason, images_seen=self._consumed).model_copy(
                    update=self._window_fields(drifting=False)
                )
            online = self._monitor.status.to_dict()
            return DriftStatus(
                enabled=True,
                window_size=self._monitor.window_size,
                **online,
                **self._window_fields(bool(online["drifting"])),
            )
