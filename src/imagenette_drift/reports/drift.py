"""A drift summary (`drift.windows.run_window_tests`) as a plain-text table, drift_report.json and a p-value plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagenette_drift.io import write_text_atomic
from imagenette_drift.plots import save_png


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary, one line per method."""
    lines = [
        f"{summary['n_images']} images, {summary['n_windows']} window(s) of {summary['window_size']}, "
        f"alpha={summary['alpha']}, reference n={summary['n_reference']}",
        f"{'test':<6} {'windows flagged':>16} {'median p-value':>15}",
    ]
    for name, m in summary["methods"].items():
        lines.append(f"{name:<6} {m['flagged_fraction']:>16.1%} {m['median_p_value']:>15.4f}")
    lines.append(
        f"drift: {'YES' if summary['drift'] else 'no'} (YES when a test flags more than half of the windows)"
    )
    return "\n".join(lines)


def write_report(
    summary: dict[str, Any], out_dir: str | Path, name: str = "drift_report"
) -> tuple[Path, Path]:
    """Write `<name>.json` and a `<name>.png` plot of the per-window p-values; return both paths."""
    out_dir = Path(out_dir)
    json_path = write_text_atomic(out_dir / f"{name}.json", json.dumps(summary, indent=2) + "\n")
    return json_path, _plot(summary, out_dir / f"{name}.png")


def _plot(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    windows = [r["window"] for r in summary["windows"]]
    for name, marker in zip(summary["methods"], "os^D", strict=False):
        ax.plot(windows, [r[f"{name}_p_value"] for r in summary["windows"]], marker, label=name, alpha=0.8)
    ax.axhline(summary["alpha"], color="red", linestyle="--", label=f"alpha = {summary['alpha']}")
    ax.set_yscale("log")
    ax.set_ylim(top=1.05)
    ax.set_xlabel(f"window ({summary['window_size']} images)")
    ax.set_ylabel("p-value")
    ax.set_title(
        f"drift tests on {summary['n_images']} images: {'DRIFT' if summary['drift'] else 'no drift'}"
    )
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)
