"""Figures written by training and reports (confusion matrix), rendered headless to PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from imagenette_drift.io import atomic_path


def plot_confusion_matrix(
    matrix: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Save a row-normalised confusion matrix (rows: true class) with counts in the cells as a PNG."""
    counts = matrix.detach().cpu().long()
    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.7 * n + 3, 0.7 * n + 2), dpi=100)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(
        title or f"confusion matrix (accuracy {counts.diag().sum() / counts.sum().clamp(min=1):.3f})"
    )
    return save_png(fig, path)


def save_png(fig: plt.Figure, path: str | Path) -> Path:
    """Lay out `fig`, write it to `path` as a PNG atomically (temp file, then rename) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
