"""Gather a run's results (metrics, learning curves, drift, profiler) into metrics.json and a Markdown report."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imagenette_drift.plots import save_png

# Metric keys written by ImagenetteClassifier to `{stage}_metrics.json` -> names in metrics.json.
METRIC_NAMES = {"acc": "top1", "acc_top5": "top5", "f1": "f1"}
DRIFT_METHODS = ("mmd", "ks", "chi2", "inputs")


def find_in_dirs(log_dirs: Sequence[Path], name: str) -> Path | None:
    """The last of `log_dirs` that holds a file `name` (later folders win), or None."""
    found = [d / name for d in log_dirs if (d / name).is_file()]
    return found[-1] if found else None


def stage_metrics(log_dirs: Sequence[Path]) -> dict[str, dict[str, float]]:
    """{"val": {"top1", "top5", "f1"}, "test": {...}} from the `{stage}_metrics.json` files in `log_dirs`."""
    metrics: dict[str, dict[str, float]] = {}
    for stage in ("val", "test"):
        path = find_in_dirs(log_dirs, f"{stage}_metrics.json")
        if path is None:
            continue
        values = read_json(path)
        named = {
            name: float(values[f"{stage}/{key}"])
            for key, name in METRIC_NAMES.items()
            if f"{stage}/{key}" in values
        }
        if named:
            metrics[stage] = named
    return metrics


def drift_metrics(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """False-positive rate (windows flagged on clean data) and power (windows flagged on shifted data).

    Windows are pooled over all reports of a kind; a report is "shifted" when its source names a corruption.
    """
    pooled: dict[str, dict[str, list[int]]] = {"fpr": {}, "power": {}}
    for report in reports:
        kind = "power" if drift_label(report) != "clean" else "fpr"
        for method, values in report["methods"].items():
            flagged = round(values["flagged_fraction"] * report["n_windows"])
            counts = pooled[kind].setdefault(method, [0, 0])
            counts[0] += flagged
            counts[1] += report["n_windows"]
    return {
        kind: {method: flagged / total for method, (flagged, total) in methods.items()}
        for kind, methods in pooled.items()
        if methods
    }


def drift_label(report: Mapping[str, Any]) -> str:
    """What a report tested: "clean", or "<corruption>-<severity>" for `imagenette drift --data.corruption`."""
    source = report.get("source") or {}
    if source.get("corruption"):
        return f"{source['corruption']}-{source['severity']}"
    return "clean"


def read_drift_report(path: Path) -> dict[str, Any]:
    """A `drift_report.json` written by `imagenette drift` or the DriftCallback, checked for the fields used."""
    report = read_json(path)
    missing = [key for key in ("methods", "n_windows", "n_images", "window_size") if key not in report]
    if missing:
        raise ValueError(
            f"{path} is not a drift report (missing {', '.join(missing)}); pass the drift_report.json "
            "written by `imagenette drift` or by `imagenette test`."
        )
    return report


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{"test": {"top1": 0.9}} -> {"test/top1": 0.9}; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def read_learning_curves(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-step series of every `train/` and `val/` column of a Lightning CSVLogger `metrics.csv`."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key and key.startswith(("train/", "val/")) and value not in ("", None):
                    number = float(value)
                    if math.isfinite(number):
                        curves.setdefault(key, []).append((step, number))
    return curves


def plot_learning_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Losses on the left, accuracies and F1 on the right, against the training step; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for name, points in sorted(curves.items()):
        ax = loss_ax if "loss" in name else score_ax
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    for ax, title in ((loss_ax, "loss"), (score_ax, "accuracy / F1")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    return save_png(fig, path)


def metrics_table(current: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> str:
    """A Markdown table of the flat metrics, with the baseline and the change when one is given."""
    if baseline is None:
        lines = ["| metric | value |", "| --- | ---: |"]
        lines += [f"| {name} | {value:.4f} |" for name, value in current.items()]
        return "\n".join(lines)
    lines = ["| metric | this run | baseline | change |", "| --- | ---: | ---: | ---: |"]
    for name in [*current, *(k for k in baseline if k not in current)]:
        now, before = current.get(name), baseline.get(name)
        change = f"{now - before:+.4f}" if now is not None and before is not None else "-"
        lines.append(f"| {name} | {_fmt(now)} | {_fmt(before)} | {change} |")
    return "\n".join(lines)


def drift_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """One row per drift report: windows flagged and median p-value of each test."""
    methods = [m for m in DRIFT_METHODS if any(m in r["methods"] for r in reports)]
    header = "| data | images | windows | " + " | ".join(methods) + " | drift |"
    lines = [header, "| --- | ---: | ---: | " + " | ".join("---:" for _ in methods) + " | --- |"]
    for report in reports:
        cells = []
        for method in methods:
            values = report["methods"].get(method)
            cells.append(
                "-"
                if values is None
                else f"{values['flagged_fraction']:.0%} (p~{values['median_p_value']:.3g})"
            )
        window = min(report["window_size"], report["n_images"])  # one smaller window when data is short
        lines.append(
            f"| {drift_label(report)} | {report['n_images']} | {report['n_windows']} x {window} | "
            + " | ".join(cells)
            + f" | {'**yes**' if report['drift'] else 'no'} |"
        )
    return "\n".join(lines)


def estimation_table(reports: Sequence[Mapping[str, Any]]) -> str | None:
    """One row per drift report with label-free accuracy estimates: held-out accuracy, the mean estimate of each
    method over windows, the harm alert, and what the drifting windows look like (None when no report has any)."""
    with_estimates = [r for r in reports if r.get("accuracy")]
    if not with_estimates:
        return None
    methods = list(with_estimates[0]["accuracy"]["methods"])
    lines = [
        "| data | held-out | " + " | ".join(methods) + " | harm | classes moved | looks like |",
        "| --- | ---: | " + " | ".join("---:" for _ in methods) + " | --- | --- | --- |",
    ]
    for report in with_estimates:
        accuracy = report["accuracy"]
        estimates = " | ".join(f"{accuracy['methods'][m]:.1%}" for m in methods)
        explanations = report.get("explanations") or []
        moved = sorted({c for e in explanations for c in e["moved_classes"]})
        looks = sorted(
            {
                ", ".join(e["looks_like"]) if isinstance(e["looks_like"], list) else e["looks_like"]
                for e in explanations
            }
        )
        lines.append(
            f"| {drift_label(report)} | {accuracy['heldout']:.1%} | {estimates} | "
            f"{'**yes**' if accuracy['harm'] else 'no'} | {', '.join(moved) or '-'} | "
            f"{'; '.join(looks) or 'nothing drifts'} |"
        )
    return "\n".join(lines)


def profiler_table(text: str, max_rows: int = 15) -> str:
    """The total and the `max_rows` slowest actions of a Lightning profiler summary, as a Markdown table."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    if len(rows) < 2:
        raise ValueError("not a Lightning profiler summary (no table rows starting with '|').")
    header, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(cells).replace("`", "'") + " |" for cells in body[: max_rows + 1]]
    if len(body) > max_rows + 1:
        lines.append(f"\n{len(body) - max_rows - 1} more actions in the full summary.")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object.")
    return data
