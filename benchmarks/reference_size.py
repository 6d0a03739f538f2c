"""The smallest drift reference that calibrates each test at each window size, measured by simulation.

A test is calibrated at (reference size, window) when its false-positive rate at alpha 0.05, over many
reference draws each tested on a fresh drift-free window, lies within [0.02, 0.08] (the interval
`tests/drift/test_calibration.py` holds every detector to). The smallest calibrated size is the smallest
size on the grid from which every larger size on the grid is calibrated too. Reference and windows come from
one fixed synthetic distribution (no drift), built as the checkpoint's `DriftReference` builds its detectors:
Gaussian embeddings (MMD, stored in float16), unbalanced softmax outputs with one rare class (KS per class,
and chi-squared on their argmax labels), and 12 input statistics, two of them mostly exact zeros (KS).

    python benchmarks/reference_size.py            # about 30 minutes on 2 quiet cores; writes the table below
    python benchmarks/reference_size.py --draws 20 --windows 20   # a quick look

Output: `benchmarks/results/reference_size.md` and `.json`; `imagenette_drift.drift.reference_size` holds the
table the product refuses by (keep the two in step).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from imagenette_drift.drift import ChiSquaredDriftDetector, KSDriftDetector, MMDDriftDetector
from imagenette_drift.io import write_text_atomic

ALPHA = 0.05
INTERVAL = (0.02, 0.08)
# Largest spread (standard deviation) of the false-positive rate between references: with 0.04, one reference's
# own rate stays below about 0.10 for 9 references in 10 at alpha 0.05 (0.05 + 1.28 * 0.04).
MAX_SPREAD = 0.04
TESTS = ("mmd", "ks", "chi2", "inputs")
# Reference sizes tested per window: 8 images (the sample's old held-out split) and 1, 2, 4 and 8 windows' worth.
RATIOS = (1, 2, 4, 8)
WINDOWS = (20, 50, 100, 200)
EMBEDDING_DIM, NUM_CLASSES, N_STATS = 64, 10, 12
RESULTS = Path(__file__).resolve().parent / "results"


class Population:
    """A fixed distribution of (embedding, softmax, input statistics) triples with no drift anywhere."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.scales = np.linspace(2.0, 0.2, EMBEDDING_DIM)  # anisotropic, like real embeddings
        self.class_log_prior = np.log([0.2, 0.15, 0.15, 0.12, 0.1, 0.1, 0.08, 0.05, 0.04, 0.01])
        self.mixing = rng.normal(size=(N_STATS - 2, N_STATS - 2)) / np.sqrt(N_STATS)  # correlated statistics

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n, D)`` embeddings, ``(n, 10)`` softmax outputs and ``(n, 12)`` statistics, all float32."""
        embeddings = rng.standard_normal((n, EMBEDDING_DIM)) * self.scales
        logits = 2.0 * rng.standard_normal((n, NUM_CLASSES)) + self.class_log_prior
        probs = torch.softmax(torch.from_numpy(logits), dim=1)
        dense = rng.standard_normal((n, N_STATS - 2)) @ self.mixing
        clipped = np.where(rng.random((n, 2)) < 0.6, 0.0, rng.beta(2.0, 5.0, size=(n, 2)))
        stats = np.concatenate([dense, clipped], axis=1)
        return torch.from_numpy(embeddings).float(), probs.float(), torch.from_numpy(stats).float()


def detectors(emb: torch.Tensor, probs: torch.Tensor, stats: torch.Tensor, seed: int) -> dict[str, object]:
    """The four batch detectors as `DriftReference.fit` builds them."""
    return {
        "mmd": MMDDriftDetector(emb.half(), n_permutations=100, alpha=ALPHA, seed=seed),
        "ks": KSDriftDetector(probs.half(), alpha=ALPHA),
        "chi2": ChiSquaredDriftDetector(probs, num_classes=NUM_CLASSES, alpha=ALPHA, seed=seed),
        "inputs": KSDriftDetector(stats, alpha=ALPHA),
    }


def false_positive_rates(
    population: Population, n_ref: int, window: int, draws: int, windows_per_draw: int
) -> dict[str, list[float]]:
    """Each test's rejection rate on `windows_per_draw` fresh drift-free windows, per seeded reference draw."""
    rates: dict[str, list[float]] = {name: [] for name in TESTS}
    for draw in range(draws):
        rng = np.random.default_rng([n_ref, window, draw])
        built = detectors(*population.sample(n_ref, rng), seed=draw)
        rejections = dict.fromkeys(TESTS, 0)
        for _ in range(windows_per_draw):
            w_emb, w_probs, w_stats = population.sample(window, rng)
            inputs = {"mmd": w_emb, "ks": w_probs, "chi2": w_probs, "inputs": w_stats}
            for name in TESTS:
                rejections[name] += bool(built[name].test(inputs[name]).drift)
        for name in TESTS:
            rates[name].append(rejections[name] / windows_per_draw)
    return rates


def summarize(per_reference: list[float], windows_per_draw: int) -> dict[str, float]:
    """Mean false-positive rate and the spread of the rate between references (binomial noise removed)."""
    rates = np.asarray(per_reference)
    mean = float(rates.mean())
    noise = float(np.mean(rates * (1.0 - rates))) / max(windows_per_draw - 1, 1)
    spread = float(np.sqrt(max(float(rates.var(ddof=1)) - noise, 0.0)))
    return {"mean": mean, "spread": spread}


def calibrated(cell: dict[str, float]) -> bool:
    """Mean rate within the interval, and one reference's own rate rarely far above it."""
    return INTERVAL[0] <= cell["mean"] <= INTERVAL[1] and cell["spread"] <= MAX_SPREAD


def smallest_calibrated(cells: dict[int, dict[str, float]]) -> int | None:
    """The smallest reference size from which every larger measured size is calibrated (None: not even the largest)."""
    smallest = None
    for n_ref in sorted(cells, reverse=True):
        if not calibrated(cells[n_ref]):
            break
        smallest = n_ref
    return smallest


def sizes_for(window: int, ratios: tuple[int, ...] = RATIOS) -> list[int]:
    return sorted({8, *(r * window for r in ratios)})


def measure(draws: int, windows_per_draw: int, ratios: tuple[int, ...], windows: tuple[int, ...]) -> dict:
    population = Population()
    cells: dict[str, dict[int, dict[int, dict[str, float]]]] = {t: {w: {} for w in windows} for t in TESTS}
    for window in windows:
        for n_ref in sizes_for(window, ratios):
            rates = false_positive_rates(population, n_ref, window, draws, windows_per_draw)
            for name in TESTS:
                cells[name][window][n_ref] = summarize(rates[name], windows_per_draw)
            shown = "  ".join(
                f"{t} {cells[t][window][n_ref]['mean']:.3f}+-{cells[t][window][n_ref]['spread']:.3f}"
                for t in TESTS
            )
            print(f"window {window:4d}  n_ref {n_ref:4d}  {shown}", flush=True)
    smallest = {t: {w: smallest_calibrated(cells[t][w]) for w in windows} for t in TESTS}
    return {
        "draws": draws,
        "windows_per_draw": windows_per_draw,
        "alpha": ALPHA,
        "interval": INTERVAL,
        "max_spread": MAX_SPREAD,
        "cells": cells,
        "smallest": smallest,
    }


def markdown(result: dict) -> str:
    windows = sorted(next(iter(result["smallest"].values())))
    lines = [
        f"Smallest reference that calibrates each test: the false-positive rate at alpha {result['alpha']} lies in "
        f"{list(result['interval'])} on average over {result['draws']} reference draws, and varies between "
        f"references by at most {result['max_spread']} (standard deviation, binomial noise of the "
        f"{result['windows_per_draw']} windows per reference removed). `python benchmarks/reference_size.py`:",
        "",
        "| window | " + " | ".join(TESTS) + " |",
        "|---" * (1 + len(TESTS)) + "|",
    ]
    for w in windows:
        cells = [str(result["smallest"][t][w]) if result["smallest"][t][w] else "> grid" for t in TESTS]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", "Mean false-positive rate +- its spread between references, by reference size:", ""]
    for t in TESTS:
        for w in windows:
            row = ", ".join(
                f"{n}: {c['mean']:.3f}+-{c['spread']:.3f}" for n, c in sorted(result["cells"][t][w].items())
            )
            lines.append(f"- {t}, window {w}: {row}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=40, help="reference draws per cell")
    parser.add_argument(
        "--windows-per-draw", type=int, default=50, help="drift-free windows tested per reference"
    )
    parser.add_argument(
        "--ratios", type=int, nargs="+", default=list(RATIOS), help="reference sizes in windows"
    )
    parser.add_argument("--windows", type=int, nargs="+", default=list(WINDOWS))
    parser.add_argument("--output", type=Path, default=RESULTS / "reference_size")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = measure(args.draws, args.windows_per_draw, tuple(args.ratios), tuple(args.windows))
    text = markdown(result)
    print(text)
    write_text_atomic(args.output.with_suffix(".md"), text)
    write_text_atomic(args.output.with_suffix(".json"), json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
