"""No-drift calibration of every drift test: false-positive rates at alpha 0.05 lie in [0.02, 0.08].

Reference and windows come from one fixed synthetic distribution (so there is no drift), built like the
checkpoint's `DriftReference` builds its detectors: Gaussian embeddings (MMD and the online monitor, stored in
float16), softmax outputs whose classes are unbalanced with one rare class (KS per class in float16, and the
chi-squared test on their argmax labels), and 12 input statistics, two of them mostly exact zeros like the
clipped-pixel fractions (KS). Each cell of the grid averages over many reference draws, each tested on fresh
windows, because a detector's false-positive rate given one reference varies around its average.

The online monitor runs with ``expected_run_time=20``, so its nominal false-alarm probability per full
window is also 0.05; its rate is first alarms per window at risk (the hazard of the run length). Its grid
leaves out cells it cannot be built for (a reference of at least ``3 * window - 1`` rows) and windows of
1,000, whose calibration simulates ``n_bootstrap`` streams of ``2 * window - 1`` images (minutes per reference).

Run ``python tests/drift/test_calibration.py`` to print the table of measured rates.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from imagenette_drift.drift import (
    ChiSquaredDriftDetector,
    KSDriftDetector,
    MMDDriftDetector,
    OnlineDriftMonitor,
)
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import reference_size as bench  # the synthetic drift-free population

ALPHA = 0.05
INTERVAL = (0.02, 0.08)
REFERENCE_SIZES = (200, 1000, 5000)
WINDOWS = (20, 200, 1000)
# Reference draws per size, and windows tested per draw and window size. Whether a test rejects depends
# partly on the reference drawn (and on MMD's permutations, drawn once per reference and window size), and
# mostly on it when the window is larger than the reference: those cells get one reference per window. Every
# cell holds 600 tests, except the costly MMD cells at windows of 1,000 (0.02-0.1 s a test): 300 at
# n_ref=1000 and 240 at n_ref=5000.
DRAWS = {200: 600, 1000: 150, 5000: 30}
WINDOWS_PER_DRAW = {
    200: {20: 1, 200: 1, 1000: 1},
    1000: {20: 4, 200: 4, 1000: 2},
    5000: {20: 20, 200: 20, 1000: 8},
}
ONLINE_CELLS = ((200, 20), (1000, 20), (1000, 200), (5000, 20), (5000, 200))
ONLINE_DRAWS = {200: 12, 1000: 6, 5000: 3}
ONLINE_STREAMS, ONLINE_STEPS, ONLINE_ERT = 40, 20, 20
BATCH_DETECTORS = ("mmd", "ks", "chi2", "inputs")
NUM_CLASSES = bench.NUM_CLASSES


def _batch_rates(population: bench.Population) -> dict[tuple[str, int, int], float]:
    """False-positive rate of each batch detector per (reference size, window) cell."""
    rejections: dict[tuple[str, int, int], list[bool]] = {}
    for n_ref in REFERENCE_SIZES:
        for draw in range(DRAWS[n_ref]):
            rng = np.random.default_rng([n_ref, draw])
            emb, probs, stats = population.sample(n_ref, rng)
            detectors = {  # as DriftReference.fit builds them
                "mmd": MMDDriftDetector(emb.half(), n_permutations=100, alpha=ALPHA, seed=draw),
                "ks": KSDriftDetector(probs.half(), alpha=ALPHA),
                "chi2": ChiSquaredDriftDetector(probs, num_classes=NUM_CLASSES, alpha=ALPHA, seed=draw),
                "inputs": KSDriftDetector(stats, alpha=ALPHA),
            }
            for window in WINDOWS:
                for _ in range(WINDOWS_PER_DRAW[n_ref][window]):
                    w_emb, w_probs, w_stats = population.sample(window, rng)
                    inputs = {"mmd": w_emb, "ks": w_probs, "chi2": w_probs, "inputs": w_stats}
                    for name, detector in detectors.items():
                        drift = detector.test(inputs[name]).drift
                        rejections.setdefault((name, n_ref, window), []).append(drift)
    return {cell: float(np.mean(flags)) for cell, flags in rejections.items()}


def _online_rates(population: bench.Population) -> dict[tuple[str, int, int], float]:
    """The online monitor's first-alarm rate per full window (hazard) per (reference size, window) cell."""
    rates = {}
    for n_ref, window in ONLINE_CELLS:
        alarms = at_risk = 0
        for draw in range(ONLINE_DRAWS[n_ref]):
            rng = np.random.default_rng([n_ref, window, draw])
            monitor = OnlineDriftMonitor(
                population.sample(n_ref, rng)[0].half(),
                window_size=window,
                expected_run_time=ONLINE_ERT,
                n_bootstrap=10 * ONLINE_ERT,
                max_reference=n_ref,
                seed=draw,
            )
            for _ in range(ONLINE_STREAMS):
                stream = population.sample(window - 1 + ONLINE_STEPS, rng)[0]
                monitor.reset()
                monitor.update(stream[: window - 1])
                for x in stream[window - 1 :]:
                    at_risk += 1
                    if monitor.update(x).drifting:
                        alarms += 1
                        break
        rates[("online", n_ref, window)] = alarms / at_risk
    return rates


def measure_false_positive_rates() -> dict[tuple[str, int, int], float]:
    """Seeded no-drift false-positive rate of every detector, keyed by (detector, reference size, window)."""
    population = bench.Population()
    return {**_batch_rates(population), **_online_rates(population)}


def _table(rates: dict[tuple[str, int, int], float]) -> str:
    cells = sorted({(n, w) for _, n, w in rates})
    names = [*BATCH_DETECTORS, "online"]
    lines = ["| n_ref | window | " + " | ".join(names) + " |", "|---" * (2 + len(names)) + "|"]
    for n, w in cells:
        values = [f"{rates[(m, n, w)]:.3f}" if (m, n, w) in rates else "-" for m in names]
        lines.append(f"| {n} | {w} | " + " | ".join(values) + " |")
    return "\n".join(lines)


@pytest.mark.slow
def test_every_detector_is_calibrated_under_no_drift() -> None:
    torch.manual_seed(0)
    rates = measure_false_positive_rates()
    print(_table(rates))  # shown with `pytest -s`
    assert len(rates) == len(BATCH_DETECTORS) * len(REFERENCE_SIZES) * len(WINDOWS) + len(ONLINE_CELLS)
    outside = {cell: rate for cell, rate in rates.items() if not INTERVAL[0] <= rate <= INTERVAL[1]}
    assert not outside, f"false-positive rates outside {INTERVAL}: {outside}\n{_table(rates)}"


if __name__ == "__main__":
    print(_table(measure_false_positive_rates()))
