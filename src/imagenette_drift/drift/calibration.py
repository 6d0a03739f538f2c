"""Threshold calibration for sliding-window MMD monitoring, by simulating drift-free streams."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ert_thresholds", "simulate_window_statistics"]


def simulate_window_statistics(
    kernel: Tensor, window_size: int, n_bootstrap: int, seed: int, chunk_size: int = 16
) -> Tensor:
    """Unbiased MMD^2 of the first ``window_size`` full sliding windows of simulated drift-free streams.

    Each simulation shuffles the pool: its first ``2 * window_size - 1`` points form a stream, which gives
    ``window_size`` overlapping full windows, and the remaining ``n_pool - 2 * window_size + 1`` points are
    that simulation's reference. Window sums use 2-D prefix sums of the gathered stream kernel, so no window
    kernel is recomputed.

    Args:
        kernel: ``(n_pool, n_pool)`` Gaussian kernel of the pool with a zero diagonal.
        window_size: Sliding-window length ``W``.
        n_bootstrap: Number of simulated streams.
        seed: Seed of the shuffles.
        chunk_size: Streams processed at once (memory is about ``chunk_size * (2W)^2 * 12`` bytes).

    Returns:
        ``(n_bootstrap, window_size)`` float64 tensor; column ``t`` is the window ending at stream image ``W + t``.
    """
    n_pool, w = kernel.shape[0], window_size
    n_stream = 2 * w - 1
    n_ref = n_pool - n_stream
    # Centre the off-diagonal entries (MMD^2 is unchanged) so float32 prefix sums stay accurate.
    shift = float(kernel.sum(dtype=torch.float64)) / (n_pool * (n_pool - 1))
    kernel = (kernel - shift).fill_diagonal_(0.0)
    row_sums = kernel.sum(dim=1, dtype=torch.float64)
    total = row_sums.sum()
    generator = torch.Generator(device=kernel.device).manual_seed(seed)
    order = torch.rand(n_bootstrap, n_pool, generator=generator, device=kernel.device).argsort(dim=1)
    streams = order[:, :n_stream]
    starts = torch.arange(w, device=kernel.device)
    ends = starts + w
    out = torch.empty(n_bootstrap, w, dtype=torch.float64, device=kernel.device)
    for first in range(0, n_bootstrap, chunk_size):
        idx = streams[first : first + chunk_size]
        k_stream = kernel[idx[:, :, None], idx[:, None, :]]
        within = k_stream.sum(dim=2, dtype=torch.float64)
        to_ref = row_sums[idx] - within  # kernel sums from each stream point to this simulation's reference
        s_rr = total - 2.0 * row_sums[idx].sum(dim=1) + within.sum(dim=1)
        prefix = F.pad(to_ref.cumsum(dim=1), (1, 0))
        s_wr = prefix[:, ends] - prefix[:, starts]
        prefix2 = F.pad(k_stream.cumsum(dim=1).cumsum(dim=2), (1, 0, 1, 0)).double()
        s_ww = (
            prefix2[:, ends, ends]
            - prefix2[:, starts, ends]
            - prefix2[:, ends, starts]
            + prefix2[:, starts, starts]
        )
        out[first : first + chunk_size] = (
            s_rr[:, None] / (n_ref * (n_ref - 1)) + s_ww / (w * (w - 1)) - 2.0 * s_wr / (n_ref * w)
        )
    return out


def ert_thresholds(statistics: Tensor, expected_run_time: int) -> Tensor:
    """Per-step thresholds giving a false-alarm probability ``1 / expected_run_time`` at each step.

    Step ``t``'s threshold is the ``1 - 1/ERT`` quantile of the simulated statistics at ``t`` among the
    streams with no alarm before ``t`` (as in alibi-detect's ``MMDDriftOnline``), so the run length to the
    first false alarm is geometric with mean ``expected_run_time`` steps.

    Args:
        statistics: ``(n_bootstrap, n_steps)`` simulated drift-free statistics.
        expected_run_time: Desired mean number of steps until a false alarm.

    Returns:
        ``(n_steps,)`` float64 thresholds.
    """
    level = 1.0 - 1.0 / expected_run_time
    statistics = statistics.double()
    alive = torch.ones(statistics.shape[0], dtype=torch.bool, device=statistics.device)
    thresholds = torch.empty(statistics.shape[1], dtype=torch.float64, device=statistics.device)
    for t in range(statistics.shape[1]):
        thresholds[t] = torch.quantile(statistics[alive, t], level)
        alive &= statistics[:, t] <= thresholds[t]
    return thresholds
