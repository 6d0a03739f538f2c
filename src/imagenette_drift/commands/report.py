"""`imagenette report`: write report.md (metrics, learning curves, confusion matrix, drift, profiler) for CML."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenette_drift.commands._options import CommandParser
from imagenette_drift.io import atomic_path, write_text_atomic
from imagenette_drift.reports import training as reporting


@dataclass
class ReportOptions:
    """Options of `imagenette report`.

    Args:
        log_dir: A run's log folder (repeat for several; later ones win): {val,test}_metrics.json,
            *_confusion_matrix.png, and the CSV logger's metrics.csv for the learning curves.
        drift: A drift_report.json from `imagenette drift` or `imagenette test` (repeat for several; clean data
            gives the false-positive rate, --data.corruption data the power).
        profile: A Lightning profiler summary (e.g. fit-profile.txt).
        baseline: A metrics.json to compare with (e.g. main's).
        output: Folder for report.md and its images.
        metrics: Where to write metrics.json (default: <output>/metrics.json).
        title: The report's heading.
    """

    log_dir: list[Path]
    drift: list[Path] = field(default_factory=list)
    profile: Path | None = None
    baseline: Path | None = None
    output: Path = Path("outputs/report")
    metrics: Path | None = None
    title: str = "Training report"


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette report",
        "Collect a run's results into <output>/report.md (Markdown with PNGs beside it, ready for `cml comment "
        "create`) and a metrics.json (top-1, top-5, F1, drift false-positive rate and power).",
        ReportOptions,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.options(ReportOptions, argv)
    for path in args.log_dir:
        if not path.is_dir():
            parser.error(f"--log_dir {path}: no such folder; pass the folder a run logged to.")
    files = [
        *(("--drift", p) for p in args.drift),
        ("--profile", args.profile),
        ("--baseline", args.baseline),
    ]
    for flag, path in files:
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file.")
    try:
        drift_reports = [reporting.read_drift_report(path) for path in args.drift]
        baseline = reporting.flatten(reporting.read_json(args.baseline)) if args.baseline else None
    except ValueError as e:
        parser.error(str(e))
    try:
        profile = reporting.profiler_table(args.profile.read_text()) if args.profile else None
    except ValueError as e:
        parser.error(f"--profile {args.profile}: {e}")
    metrics: dict[str, Any] = reporting.stage_metrics(args.log_dir)
    if not metrics and not drift_reports:
        parser.error(
            f"found no val_metrics.json or test_metrics.json in {', '.join(map(str, args.log_dir))} and no "
            "--drift report: point --log_dir at the folder `imagenette fit`/`test` logged to."
        )
    if drift_reports:
        metrics["drift"] = reporting.drift_metrics(drift_reports)
    metrics_path = args.metrics or args.output / "metrics.json"
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    report = _render(args, metrics, baseline, drift_reports, profile)
    report_path = write_text_atomic(args.output / "report.md", report)
    print(f"wrote {report_path} and {metrics_path}")
    return metrics


def _render(
    args: ReportOptions,
    metrics: dict[str, Any],
    baseline: dict[str, float] | None,
    drift_reports: list[dict[str, Any]],
    profile: str | None,
) -> str:
    out: Path = args.output
    sections = [
        f"# {args.title}",
        "## Metrics",
        reporting.metrics_table(reporting.flatten(metrics), baseline),
    ]
    if baseline is not None:
        sections.append(f"Baseline: `{args.baseline}`.")
    sections += ["## Learning curves", _learning_curves(args.log_dir, out)]
    matrix = reporting.find_in_dirs(args.log_dir, "test_confusion_matrix.png") or reporting.find_in_dirs(
        args.log_dir, "val_confusion_matrix.png"
    )
    if matrix is not None:
        stage = matrix.name.split("_")[0]
        _copy(matrix, out / "confusion_matrix.png")
        sections += [f"## Confusion matrix ({stage})", "![confusion matrix](confusion_matrix.png)"]
    if drift_reports:
        sections += ["## Drift", reporting.drift_table(drift_reports)]
        estimation = reporting.estimation_table(drift_reports)
        if estimation is not None:
            sections += [
                "### Estimated accuracy (no labels) and explanations",
                "Mean estimate over windows (temperature-scaled ATC-MC/ATC-NE, average confidence, DoC, and COT, "
                "COTT, nuclear norm on newer cards); harm: "
                "the estimate stayed below held-out by more than the configured drop for consecutive windows.",
                estimation,
            ]
        seen: dict[str, int] = {}
        for path, report in zip(args.drift, drift_reports, strict=True):
            png = path.with_suffix(".png")
            if png.is_file():
                kind = "clean" if reporting.drift_label(report) == "clean" else "shifted"
                seen[kind] = seen.get(kind, 0) + 1
                name = f"drift_{kind}.png" if seen[kind] == 1 else f"drift_{kind}_{seen[kind]}.png"
                _copy(png, out / name)
                sections.append(f"![drift tests: {reporting.drift_label(report)}]({name})")
    if profile is not None:
        sections += ["## Profiler", f"`{args.profile.name}`, slowest actions first:", profile]
    return "\n\n".join(sections) + "\n"


def _learning_curves(log_dirs: list[Path], out: Path) -> str:
    # The first folder is the fit's: a later test run's metrics.csv holds no curves.
    csv_path = reporting.find_in_dirs(log_dirs[:1], "metrics.csv") or reporting.find_in_dirs(
        log_dirs, "metrics.csv"
    )
    if csv_path is None:
        return (
            "No metrics.csv in the log folders: train with the CSV logger "
            "(`--config configs/presets/csv.yaml` or `configs/presets/pipeline.yaml`) to get learning curves."
        )
    curves = reporting.read_learning_curves(csv_path)
    if not curves:
        return f"{csv_path} holds no train/ or val/ metrics."
    reporting.plot_learning_curves(curves, out / "learning_curves.png")
    return "![learning curves](learning_curves.png)"


def _copy(source: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
