"""The server's single online drift monitor, fed by every inference worker through a multiprocessing queue.

Inference workers (separate processes, possibly several) `publish` each batch's embeddings; the API-server
process runs one `DriftHub` thread that feeds them, in arrival order, to one `OnlineDriftMonitor` (which is not
thread-safe, so every access holds the hub's lock). The hub also counts batch sizes for `/metrics`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any

import numpy as np
import torch

from imagenette_drift.contract import AccuracyEstimateAnswer, DriftStatus
from imagenette_drift.drift.estimation import EstimationReference, HarmAlert
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.serve.channel import EventChannel
from imagenette_drift.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 1.0  # how long `/drift` waits for images already answered to reach the monitor
MAX_WAIT_S = 30.0  # the most `/drift?wait_s=` may ask for


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
        self,
        drift_state: dict[str, Any] | None,
        channel: EventChannel,
        metrics: ServerMetrics,
        estimation_state: dict[str, Any] | None = None,
        harm_drop: float = 5.0,
        harm_windows: int = 2,
    ) -> None:
        """Args:
        drift_state: the card's drift reference (None: monitoring off).
        estimation_state: the card's `estimation` field: label-free accuracy estimates of the latest window of
            the drift reference's window size, and a harm alert over consecutive full windows (None: not
            reported).
        harm_drop, harm_windows: the harm alert's drop in points and consecutive windows.
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
        self._estimation = EstimationReference.from_state_dict(estimation_state) if estimation_state else None
        # Estimates cover the latest window of the reference's size, the window `imagenette drift` tests.
        self._window = int((drift_state or {}).get("window_size") or 200)
        self._recent: deque[np.ndarray] = deque(maxlen=self._window)  # softmax rows of the latest images
        self._n_probs = 0
        self._harm = (
            None
            if self._estimation is None
            else HarmAlert(self._estimation.heldout_accuracy, harm_drop, harm_windows)
        )

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
                features, probs = self.channel.queue.get()
            except (EOFError, OSError):  # the queue closed: this process is shutting down
                return
            self.metrics.observe_batch(len(features))
            with self._lock:
                if probs is not None and self._estimation is not None:
                    self._add_probs(probs)
                if self._monitor is not None:
                    try:
                        self._monitor.update(torch.from_numpy(features))
                    except Exception:  # a monitor bug must not stop serving; it shows in the logs
                        log.exception("Online drift monitor update failed")
                self._consumed += len(features)
                self._consumed_more.notify_all()

    def _add_probs(self, probs: np.ndarray) -> None:
        """Keep the latest window of softmax rows; feed the harm alert at each full, non-overlapping window."""
        for row in probs:
            self._recent.append(row)
            self._n_probs += 1
            if self._n_probs % self._window == 0:
                window = torch.from_numpy(np.stack(self._recent))
                self._harm.update(self._estimation.estimate(window)["atc_mc"].estimate)

    def _accuracy(self) -> dict[str, Any]:
        """The `/drift` fields of label-free accuracy estimation (None values when not available)."""
        heldout = None if self._estimation is None else self._estimation.heldout_accuracy
        if self._estimation is None or not self._recent:
            return {"accuracy": None, "heldout_accuracy": heldout, "harm": None}
        estimates = self._estimation.estimate(torch.from_numpy(np.stack(self._recent)))
        return {
            "accuracy": {m: AccuracyEstimateAnswer(**e.to_dict()) for m, e in estimates.items()},
            "heldout_accuracy": heldout,
            "harm": self._harm.alerting,
        }

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
                    update=self._accuracy()
                )
            return DriftStatus(
                enabled=True,
                window_size=self._monitor.window_size,
                **self._monitor.status.to_dict(),
                **self._accuracy(),
            )
