"""Sliding-window MMD drift monitor for a stream of embeddings (one image at a time, as a server sees them)."""

from __future__ import annotations

import torch
from torch import Tensor

from imagenette_drift.drift._checks import (
    ArrayLike,
    as_tensor,
    check_bandwidth,
    check_matrix,
    check_positive_int,
    check_state,
    compute_dtype,
)
from imagenette_drift.drift.calibration import ert_thresholds, simulate_window_statistics
from imagenette_drift.drift.functional import gaussian_kernel, median_heuristic_bandwidth
from imagenette_drift.drift.result import OnlineDriftStatus

__all__ = ["OnlineDriftMonitor"]

_FORMAT = "imagenette_drift.OnlineDriftMonitor"
_CONFIG_KEYS = (
    "reference",
    "bandwidth",
    "thresholds",
    "reference_kernel_sum",
    "expected_run_time",
    "n_bootstrap",
)
_STREAM_KEYS = (
    "window",
    "window_kernel",
    "window_ref_sums",
    "n_in_window",
    "next_slot",
    "n_seen",
    "n_full_windows",
    "sum_ww",
    "sum_wr",
    "statistic",
    "drifting_since",
)


def _reference_pool(reference: ArrayLike, window_size: int, max_reference: int, seed: int) -> Tensor:
    """Validate the reference and keep a seeded random pool of at most ``max_reference`` rows."""
    min_rows = 3 * window_size - 1
    reference = check_matrix("reference", reference)
    if reference.shape[0] < min_rows or max_reference < min_rows:
        raise ValueError(
            f"`reference` (and `max_reference`) must allow at least {min_rows} rows for window_size="
            f"{window_size}: 2 * window_size - 1 simulate streams and at least window_size remain as the "
            f"reference; got {reference.shape[0]} rows and max_reference={max_reference}. Pass more "
            "reference embeddings or lower `window_size`."
        )
    if not reference.is_floating_point():
        reference = reference.float()
    keep = torch.randperm(reference.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    return reference[keep[:max_reference].to(reference.device)]


class OnlineDriftMonitor:
    """Unbiased MMD^2 between the last ``window_size`` embeddings and a reference, updated per image.

    Each new image costs O(window_size + n_ref) kernel evaluations: its kernel row against the window and
    against the reference update running sums; the window kernel is never recomputed (the sums are re-synced
    from stored kernel entries once per ``window_size`` images to stop round-off creeping in).

    Calibration (once, at construction) follows alibi-detect's ``MMDDriftOnline``. The reference is reduced
    to a pool of at most ``max_reference`` random rows. ``n_bootstrap`` times, the pool is shuffled into a
    stream of ``2 * window_size - 1`` points and a reference of the remaining ``n_pool - 2 * window_size + 1``;
    the statistics of the stream's ``window_size`` full windows are recorded. The threshold for the ``t``-th
    full window is the ``1 - 1/expected_run_time`` quantile at step ``t`` among simulations that have not yet
    alarmed; windows after the ``window_size``-th reuse the last threshold. At run time the monitor compares
    against a random reference of the same size, ``n_pool - 2 * window_size + 1`` rows of the pool.

    Meaning of ``expected_run_time`` (ERT): with no drift, the number of full-window updates until the first
    false alarm is approximately geometric with mean ERT, so the first false alarm comes on average around
    image ``window_size - 1 + ERT``. The approximation is good when ``n_bootstrap`` is several times ERT.
    Like alibi-detect's, the rate holds on average over reference samples: for one fixed reference the
    realised false-alarm rate varies around it (by up to ~30% in our Gaussian tests).

    Pitfalls:
        - Not thread-safe: the server must call `update` from one thread (or hold a lock around it).
        - Nothing is reported until the window is full (``window_size`` images after construction/`reset`).
        - ``drifting`` follows the latest window; ``drifting_since`` is the image index where the current run
          of over-threshold windows began and is cleared when the statistic drops back below the threshold.
    """

    def __init__(
        self,
        reference: ArrayLike,
        window_size: int = 200,
        expected_run_time: int = 1000,
        n_bootstrap: int = 2000,
        max_reference: int = 2000,
        bandwidth: float | None = None,
        seed: int = 0,
    ) -> None:
        """Reduce the reference and calibrate the thresholds by simulation.

        Args:
            reference: ``(n_ref, n_features)`` in-distribution embeddings, at least ``3 * window_size - 1`` rows.
            window_size: Number of most recent images the statistic is computed on.
            expected_run_time: Mean number of full-window updates until a false alarm when there is no drift.
            n_bootstrap: Simulated drift-free streams for calibration; use several times ``expected_run_time``.
            max_reference: Largest pool kept from ``reference`` (random rows); bounds memory and calibration time.
            bandwidth: Gaussian kernel bandwidth ``sigma``; ``None`` uses the median heuristic on the pool.
            seed: Seed for the reference reduction and the simulations.
        """
        window_size = check_positive_int("window_size", window_size, minimum=2)
        expected_run_time = check_positive_int("expected_run_time", expected_run_time, minimum=2)
        n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
        if n_bootstrap < expected_run_time:
            raise ValueError(
                f"`n_bootstrap` ({n_bootstrap}) must be at least `expected_run_time` ({expected_run_time}): a "
                f"1 - 1/{expected_run_time} quantile needs that many simulated streams. Raise `n_bootstrap` "
                "(calibration time grows linearly) or lower `expected_run_time`."
            )
        bandwidth = check_bandwidth(bandwidth)
        pool = _reference_pool(
            reference, window_size, check_positive_int("max_reference", max_reference), seed
        )
        dtype = compute_dtype(pool)
        if bandwidth is None:
            bandwidth = median_heuristic_bandwidth(pool.to(dtype))
        kernel = gaussian_kernel(pool.to(dtype), pool.to(dtype), bandwidth).fill_diagonal_(0.0)
        simulated = simulate_window_statistics(kernel, window_size, n_bootstrap, int(seed))
        n_held_out = 2 * window_size - 1
        self._configure(
            reference=pool[n_held_out:],
            bandwidth=bandwidth,
            thresholds=ert_thresholds(simulated, expected_run_time).cpu(),
            reference_kernel_sum=float(kernel[n_held_out:, n_held_out:].sum(dtype=torch.float64)),
            expected_run_time=expected_run_time,
            n_bootstrap=n_bootstrap,
        )
        self.reset()

    def _configure(
        self,
        reference: Tensor,
        bandwidth: float,
        thresholds: Tensor,
        reference_kernel_sum: float,
        expected_run_time: int,
        n_bootstrap: int,
    ) -> None:
        """Set the calibrated, immutable part of the monitor."""
        self.reference = reference
        self.bandwidth = bandwidth
        self.thresholds = thresholds
        self.expected_run_time = expected_run_time
        self.n_bootstrap = n_bootstrap
        self._reference_kernel_sum = reference_kernel_sum
        self._threshold_list = thresholds.tolist()
        self._dtype = compute_dtype(reference)
        self._ref = reference.to(self._dtype)
        self._gamma = 0.5 / bandwidth**2

    @property
    def window_size(self) -> int:
        """Number of most recent images the statistic is computed on."""
        return len(self._threshold_list)

    @property
    def n_features(self) -> int:
        """Embedding dimension the monitor expects."""
        return self.reference.shape[1]

    @property
    def device(self) -> torch.device:
        """Device of the reference, where all kernel rows are computed."""
        return self.reference.device

    @property
    def status(self) -> OnlineDriftStatus:
        """Snapshot of the monitor after the latest update."""
        filled = self._n_in_window == self.window_size
        return OnlineDriftStatus(
            images_seen=self._n_seen,
            window_filled=filled,
            statistic=self._statistic,
            threshold=self._threshold_list[min(self._n_full_windows - 1, self.window_size - 1)]
            if filled
            else None,
            drifting=self._drifting_since is not None,
            drifting_since=self._drifting_since,
        )

    def reset(self) -> None:
        """Forget the stream (window, counters, drift flag) but keep the reference and thresholds."""
        w = self.window_size
        self._window = torch.zeros(w, self.n_features, dtype=self._dtype, device=self.device)
        self._window_kernel = torch.zeros(w, w, dtype=self._dtype, device=self.device)
        self._window_ref_sums = [0.0] * w
        self._n_in_window = 0
        self._next_slot = 0
        self._n_seen = 0
        self._n_full_windows = 0
        self._sum_ww = 0.0
        self._sum_wr = 0.0
        self._statistic: float | None = None
        self._drifting_since: int | None = None

    def update(self, x: ArrayLike) -> OnlineDriftStatus:
        """Add one embedding ``(n_features,)`` or a batch ``(k, n_features)`` in stream order; return the status."""
        x = as_tensor("x", x)
        x = check_matrix("x", x.unsqueeze(0) if x.ndim == 1 else x, min_rows=1, n_features=self.n_features)
        x = x.to(device=self.device, dtype=self._dtype)
        ref_sums = gaussian_kernel(x, self._ref, self.bandwidth).sum(dim=1, dtype=torch.float64).tolist()
        for row, ref_sum in zip(x, ref_sums, strict=True):
            self._push(row, ref_sum)
        return self.status

    def _push(self, x: Tensor, ref_sum: float) -> None:
        """Put one embedding into the oldest slot and update the running kernel sums."""
        slot, w = self._next_slot, self.window_size
        sq_dist = (self._window - x).pow_(2).sum(dim=1)
        row = sq_dist.mul_(-self._gamma).exp_()
        if self._n_in_window < w:
            row[self._n_in_window :] = 0.0  # empty slots; the window fills slots 0, 1, ... in order
        row[slot] = 0.0
        self._sum_ww += 2.0 * float((row - self._window_kernel[slot]).sum(dtype=torch.float64))
        self._sum_wr += ref_sum - self._window_ref_sums[slot]
        self._window[slot] = x
        self._window_kernel[slot] = row
        self._window_kernel[:, slot] = row
        self._window_ref_sums[slot] = ref_sum
        self._n_in_window = min(self._n_in_window + 1, w)
        self._next_slot = (slot + 1) % w
        self._n_seen += 1
        if self._next_slot == 0:
            self._resync()
        if self._n_in_window == w:
            self._record(self._mmd2())

    def _resync(self) -> None:
        """Recompute the running sums from the stored kernel entries (O(window^2), once per window)."""
        self._sum_ww = float(self._window_kernel.sum(dtype=torch.float64))
        self._sum_wr = float(sum(self._window_ref_sums))

    def _mmd2(self) -> float:
        """Unbiased MMD^2 of the full window against the reference, from the running sums."""
        n, w = self.reference.shape[0], self.window_size
        return (
            self._reference_kernel_sum / (n * (n - 1))
            + self._sum_ww / (w * (w - 1))
            - 2.0 * self._sum_wr / (n * w)
        )

    def _record(self, statistic: float) -> None:
        """Compare a full window's statistic with its step's threshold and update the drift flag."""
        threshold = self._threshold_list[min(self._n_full_windows, self.window_size - 1)]
        self._n_full_windows += 1
        self._statistic = statistic
        if statistic <= threshold:
            self._drifting_since = None
        elif self._drifting_since is None:
            self._drifting_since = self._n_seen

    def state_dict(self) -> dict[str, Tensor | int | float | str | None]:
        """Plain dict of tensors and primitives (reference, thresholds and stream state) for ``torch.load(weights_only=True)``."""
        return {
            "format": _FORMAT,
            "version": 1,
            "reference": self.reference.cpu().clone(),
            "bandwidth": self.bandwidth,
            "thresholds": self.thresholds.clone(),
            "reference_kernel_sum": self._reference_kernel_sum,
            "expected_run_time": self.expected_run_time,
            "n_bootstrap": self.n_bootstrap,
            "window": self._window.cpu().clone(),
            "window_kernel": self._window_kernel.cpu().clone(),
            "window_ref_sums": torch.tensor(self._window_ref_sums, dtype=torch.float64),
            "n_in_window": self._n_in_window,
            "next_slot": self._next_slot,
            "n_seen": self._n_seen,
            "n_full_windows": self._n_full_windows,
            "sum_ww": self._sum_ww,
            "sum_wr": self._sum_wr,
            "statistic": self._statistic,
            "drifting_since": self._drifting_since,
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str | None = None) -> OnlineDriftMonitor:
        """Rebuild a monitor, stream included, from `state_dict` output without re-calibrating."""
        check_state(state, _FORMAT, _CONFIG_KEYS + _STREAM_KEYS)
        reference = state["reference"] if device is None else state["reference"].to(device)
        monitor = cls.__new__(cls)
        monitor._configure(
            reference=reference,
            bandwidth=float(state["bandwidth"]),
            thresholds=state["thresholds"].double().cpu(),
            reference_kernel_sum=float(state["reference_kernel_sum"]),
            expected_run_time=int(state["expected_run_time"]),
            n_bootstrap=int(state["n_bootstrap"]),
        )
        monitor.reset()
        w = monitor.window_size
        if tuple(state["window"].shape) != (w, monitor.n_features) or tuple(state["window_kernel"].shape) != (
            w,
            w,
        ):
            raise ValueError(
                f"`state` window buffers have shapes {tuple(state['window'].shape)} and "
                f"{tuple(state['window_kernel'].shape)}, expected ({w}, {monitor.n_features}) and ({w}, {w})."
            )
        monitor._window = state["window"].to(device=monitor.device, dtype=monitor._dtype, copy=True)
        monitor._window_kernel = state["window_kernel"].to(
            device=monitor.device, dtype=monitor._dtype, copy=True
        )
        monitor._window_ref_sums = state["window_ref_sums"].tolist()
        monitor._n_in_window = int(state["n_in_window"])
        monitor._next_slot = int(state["next_slot"])
        monitor._n_seen = int(state["n_seen"])
        monitor._n_full_windows = int(state["n_full_windows"])
        monitor._sum_ww = float(state["sum_ww"])
        monitor._sum_wr = float(state["sum_wr"])
        monitor._statistic = state["statistic"]
        monitor._drifting_since = state["drifting_since"]
        return monitor

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_ref={self.reference.shape[0]}, n_features={self.n_features}, "
            f"window_size={self.window_size}, expected_run_time={self.expected_run_time}, "
            f"bandwidth={self.bandwidth:.4g})"
        )
