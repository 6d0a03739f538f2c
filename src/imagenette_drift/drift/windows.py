"""Test a set of embeddings and softmax outputs against a drift reference, window by window."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.reference_size import label_shift_testable

METHODS = ("mmd", "ks", "chi2", "inputs")


def run_window_tests(
    reference: DriftReference,
    embeddings: Tensor,
    probs: Tensor,
    image_stats: Tensor | None = None,
    window_size: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> dict[str, Any]:
    """Split the images into windows and run every test on each; return a JSON-ready summary.

    Images are shuffled (seeded) before windowing by default, because data sets are often ordered by class
    and a window of one class is a label shift, not what the operator asked about. The input-statistics test
    runs when both `image_stats` and the reference's `inputs` detector are there.
    """
    if len(embeddings) != len(probs):
        raise ValueError(f"Got {len(embeddings)} embeddings but {len(probs)} softmax rows; they must match.")
    window = window_size or reference.window_size
    n = len(embeddings)
    chunks = window_indices(n, window, seed, shuffle)
    use_inputs = image_stats is not None and reference.inputs is not None
    methods_run = window_tests(reference, min(window, n), use_inputs)
    rows = []
    for index, chunk in enumerate(chunks):
        results = {
            "mmd": reference.mmd.test(embeddings[chunk]),
            "ks": reference.ks.test(probs[chunk]),
        }
        if "chi2" in methods_run:
            results["chi2"] = reference.chi2.test(probs[chunk])
        if use_inputs:
            results["inputs"] = reference.inputs.test(image_stats[chunk])
        row: dict[str, Any] = {"window": index, "size": len(chunk)}
        for name, result in results.items():
            row |= {
                f"{name}_statistic": result.statistic,
                f"{name}_p_value": result.p_value,
                f"{name}_drift": result.drift,
            }
        rows.append(row)
    methods = {
        name: {
            "flagged_fraction": sum(r[f"{name}_drift"] for r in rows) / len(rows),
            "median_p_value": float(torch.tensor([r[f"{name}_p_value"] for r in rows]).median()),
        }
        for name in methods_run
    }
    return {
        "n_images": n,
        "window_size": window,
        "n_windows": len(rows),
        "alpha": reference.mmd.alpha,
        "n_reference": reference.n_reference,
        "methods": methods,
        "drift": any(m["flagged_fraction"] > 0.5 for m in methods.values()),
        "windows": rows,
    }


def window_tests(reference: DriftReference, window: int, use_inputs: bool = True) -> tuple[str, ...]:
    """The tests `run_window_tests` runs on windows of `window` images: MMD and KS always, chi-squared from 5
    images per class (`reference_size.label_shift_testable`, as the monitor), the input statistics when given."""
    tests = ("mmd", "ks")
    if label_shift_testable(window, reference.chi2.num_classes):
        tests += ("chi2",)
    return tests + (("inputs",) if use_inputs and reference.inputs is not None else ())


def window_indices(n: int, window: int, seed: int = 0, shuffle: bool = True) -> list[Tensor]:
    """The image indices of each window: seeded shuffle, full windows only (or one smaller window)."""
    if n < 2:
        raise ValueError(f"Drift tests need at least 2 images, got {n}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    return [order[i : i + window] for i in range(0, n - window + 1, window)] or [order]
