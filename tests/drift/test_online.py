"""OnlineDriftMonitor: incremental statistic, calibrated false alarms, detection delay and state round trips."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from imagenette_drift.drift import OnlineDriftMonitor, OnlineDriftStatus, detector_from_state_dict
from imagenette_drift.drift.calibration import simulate_window_statistics
from imagenette_drift.drift.functional import gaussian_kernel, mmd2_unbiased

D = 8
WINDOW = 20


def _gaussian(n: int, seed: int, shift: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D, generator=generator) + shift).to(dtype)


@pytest.fixture(scope="module")
def monitor() -> OnlineDriftMonitor:
    return OnlineDriftMonitor(
        _gaussian(300, seed=0), window_size=WINDOW, expected_run_time=100, n_bootstrap=1000
    )


def test_incremental_statistic_equals_from_scratch_computation(monitor: OnlineDriftMonitor) -> None:
    monitor.reset()
    stream = torch.cat([_gaussian(45, seed=1), _gaussian(40, seed=2, shift=0.5)])
    reference = monitor.reference.double()
    for i, x in enumerate(stream, start=1):
        status = monitor.update(x)
        assert status.n_seen == i
        if i < WINDOW:
            assert status == OnlineDriftStatus(i, False, None, None, False, None)
            continue
        expected = mmd2_unbiased(reference, stream[i - WINDOW : i].double(), monitor.bandwidth)
        assert status.window_filled
        assert status.statistic == pytest.approx(expected, abs=1e-4, rel=1e-5)


def test_batch_update_equals_one_at_a_time(monitor: OnlineDriftMonitor) -> None:
    stream = _gaussian(70, seed=3, shift=0.3)
    monitor.reset()
    one_by_one = [monitor.update(x) for x in stream][-1]
    monitor.reset()
    monitor.update(stream[:33])
    batched = monitor.update(stream[33:].numpy())
    assert batched.statistic == pytest.approx(
        one_by_one.statistic, rel=1e-6
    )  # same maths, other matmul shapes
    assert replace(batched, statistic=None) == replace(one_by_one, statistic=None)


def test_false_alarm_run_length_matches_expected_run_time() -> None:
    # With no drift the number of full windows until the first alarm is ~geometric with mean ERT = 100, so
    # the chance of an alarm within the first 100 full windows is 1 - (1 - 1/100)^100 = 0.634. Calibration
    # averages over reference samples, so average over a few references too.
    alarms, n_streams = 0, 0
    for seed in range(4):
        monitor = OnlineDriftMonitor(
            _gaussian(300, seed=20 + seed),
            window_size=WINDOW,
            expected_run_time=100,
            n_bootstrap=1000,
            seed=seed,
        )
        for rep in range(50):
            monitor.reset()
            stream = _gaussian(WINDOW - 1 + 100, seed=1000 * (seed + 1) + rep)
            alarms += any(monitor.update(x).drifting for x in stream)
            n_streams += 1
    assert 0.5 <= alarms / n_streams <= 0.77


def test_no_false_alarm_on_a_long_drift_free_stream() -> None:
    monitor = OnlineDriftMonitor(
        _gaussian(300, seed=4), window_size=WINDOW, expected_run_time=5000, n_bootstrap=5000, seed=1
    )
    statuses = [monitor.update(x) for x in _gaussian(400, seed=5)]
    assert not any(s.drifting for s in statuses)
    assert statuses[-1].threshold == monitor.thresholds[-1].item()


def test_detects_a_mean_shift_within_one_window(monitor: OnlineDriftMonitor) -> None:
    monitor.reset()
    before = monitor.update(_gaussian(2 * WINDOW, seed=6))
    assert not before.drifting
    after = monitor.update(_gaussian(WINDOW, seed=7, shift=1.0))
    assert after.drifting
    assert 2 * WINDOW < after.drifting_since <= 3 * WINDOW


def test_state_dict_round_trip_continues_the_stream_identically(tmp_path) -> None:
    monitor = OnlineDriftMonitor(
        _gaussian(300, seed=8, dtype=torch.float16), window_size=WINDOW, expected_run_time=50, n_bootstrap=200
    )
    torch.save(monitor.state_dict(), tmp_path / "fresh.pt")  # None-valued fields load with weights_only too
    fresh = OnlineDriftMonitor.from_state_dict(torch.load(tmp_path / "fresh.pt", weights_only=True))
    assert fresh.status == monitor.status
    assert torch.equal(fresh.thresholds, monitor.thresholds)
    monitor.update(_gaussian(35, seed=9))
    torch.save(monitor.state_dict(), tmp_path / "monitor.pt")
    state = torch.load(tmp_path / "monitor.pt", weights_only=True)
    assert state["reference"].dtype == torch.float16
    rest = _gaussian(30, seed=10, shift=0.4)
    expected = [monitor.update(x) for x in rest]
    for loaded in (OnlineDriftMonitor.from_state_dict(state), detector_from_state_dict(state)):
        assert isinstance(loaded, OnlineDriftMonitor)
        assert [loaded.update(x) for x in rest] == expected


def test_reset_forgets_the_stream(monitor: OnlineDriftMonitor) -> None:
    monitor.update(_gaussian(WINDOW, seed=11))
    monitor.reset()
    assert monitor.status == OnlineDriftStatus(0, False, None, None, False, None)


def test_calibration_statistics_equal_direct_computation() -> None:
    pool = _gaussian(80, seed=12).double()
    bandwidth = 3.0
    kernel = gaussian_kernel(pool, pool, bandwidth).fill_diagonal_(0.0)
    simulated = simulate_window_statistics(kernel, window_size=10, n_bootstrap=3, seed=5)
    order = torch.rand(3, 80, generator=torch.Generator().manual_seed(5)).argsort(dim=1)
    for b in range(3):
        stream, reference = order[b, :19], order[b, 19:]
        for t in (0, 4, 9):
            expected = mmd2_unbiased(pool[reference], pool[stream[t : t + 10]], bandwidth)
            assert simulated[b, t].item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_size": 120}, "at least 359 rows"),
        ({"expected_run_time": 500, "n_bootstrap": 100}, "`n_bootstrap` \\(100\\) must be at least"),
        ({"window_size": 1}, "`window_size` must be an integer >= 2"),
    ],
)
def test_bad_constructor_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OnlineDriftMonitor(_gaussian(300, seed=13), **kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [(torch.zeros(3), "has 3 features but the reference has 8"), (torch.zeros(2, 2, 8), "2-D")],
)
def test_bad_update_input_is_rejected(monitor: OnlineDriftMonitor, x: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        monitor.update(x)
