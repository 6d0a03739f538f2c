"""`imagenette gate`: compare a candidate with the champion on the same test set; exit 1 when it is refused."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.commands._options import CommandParser
from imagenette_drift.commands.registry import REGISTRY_ENV_VAR
from imagenette_drift.data.layout import scan_split
from imagenette_drift.data.root import resolve_root
from imagenette_drift.errors import BadCheckpointError, MissingCheckpointError, UserError
from imagenette_drift.release.gate import (
    DEFAULT_MIN_ACCURACY,
    DEFAULT_TOLERANCE,
    GateDecision,
    decide,
    evaluate,
    format_table,
    with_production,
    write_outputs,
)
from imagenette_drift.release.production import DEFAULT_WINDOW_TOLERANCE

if TYPE_CHECKING:
    from imagenette_drift.release.window import WindowChoice

REFUSED_EXIT = 1


@dataclass
class GateData:
    """The test set, spelled as the Lightning commands' data options.

    Args:
        root: Data root whose val/ folder is the test set (default: $IMAGENETTE_DATA, else
            data/imagenette2-160).
    """

    root: Path | None = None


@dataclass
class GateOptions:
    """Options of `imagenette gate`.

    Args:
        candidate: A .ckpt path, gs:// URI, or a version in --registry.
        champion: A .ckpt path, gs:// URI, or a version in --registry (`champion`: the registry's); omit when
            there is none yet.
        registry: A registry folder or gs:// prefix to resolve versions (default: $IMAGENETTE_REGISTRY).
        tolerance: How far (a fraction: 0.005 = 0.5 points) below the champion's top-1 the candidate may be.
        min_accuracy: The top-1 required when there is no champion.
        data: The test set.
        output: Write the table (.md) or the decision (.json); repeat for both.
        log: The champion's inference log (a folder or gs://BUCKET/PREFIX): also compare on a production
            window.
        window: With --log: `latest` (the monitor's newest window: from --monitor_out's table, else the newest
            UTC hour of the champion's records), a record count (its last N records) or a duration (e.g. 1h:
            its records of the last hour it served).
        monitor_out: With --window latest: the `imagenette monitor --out` folder of the champion, whose newest
            window is taken (default: none, the newest UTC hour of the champion's records, the monitor's
            default window).
        exclude_trained: With --log: a folder written by `imagenette export-labelled` that the candidate
            trained on; its logged images' records are left out of the window (repeat for several).
        window_tolerance: How far (a fraction) the candidate may fall behind the champion on the window's
            estimated and realized accuracy, or exceed its unfamiliar share.
        batch_size: Images per forward pass.
        threads: Torch CPU threads (default: torch's).
        cache_dir: Where gs:// models download.
    """

    candidate: str
    champion: str | None = None
    registry: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    min_accuracy: float = DEFAULT_MIN_ACCURACY
    data: GateData = field(default_factory=GateData)
    output: list[Path] = field(default_factory=list)
    log: str | None = None
    window: str = "latest"
    monitor_out: Path | None = None
    exclude_trained: list[Path] = field(default_factory=list)
    window_tolerance: float = DEFAULT_WINDOW_TOLERANCE
    batch_size: int = 64
    threads: int | None = None
    cache_dir: Path = Path(".cache/imagenette/gate")


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette gate",
        "Evaluate a candidate and the champion on the same test set (the root's val/ folder) with the serving "
        "code's evaluation and, with --log, on the latest production window (both replay the images the "
        "champion served, logged with `serve --log_images`); print a side-by-side markdown table. Exit 0 when "
        "the candidate's top-1 is at least the champion's minus --tolerance (with no champion: at least "
        "--min_accuracy) and it is no worse on the window (estimated accuracy, unfamiliar share and realized "
        "accuracy each within --window_tolerance), else 1.",
        GateOptions,
    )


_VERSION = re.compile(r"[0-9a-f]{12}")


def _load(value: str, flag: str, args: GateOptions) -> InferenceModel:
    """A checkpoint path, a gs:// URI, or a registry version, loaded for inference."""
    if value.startswith("gs://"):
        from imagenette_drift.storage.checkpoint import resolve_checkpoint

        try:
            return load_for_inference(resolve_checkpoint(value, args.cache_dir).path)
        except UserError as e:
            raise type(e)(f"{flag}: {e}") from e
    if args.registry is None and _VERSION.fullmatch(value) and not Path(value).exists():
        raise UserError(
            f"{flag} {value} looks like a registry version: a registry version needs --registry or "
            "IMAGENETTE_REGISTRY."
        )
    if Path(value).is_file() or args.registry is None:
        try:
            return load_for_inference(value)
        except MissingCheckpointError as e:
            raise MissingCheckpointError(f"{flag}: {e}") from e
    from imagenette_drift.registry.opening import open_registry

    return load_for_inference(open_registry(args.registry).fetch(value, args.cache_dir))


def _on_window(
    decision: GateDecision,
    candidate: InferenceModel,
    champion: InferenceModel,
    window: WindowChoice,
    args: GateOptions,
) -> GateDecision:
    """The decision joined with the comparison on the champion's production window."""
    from imagenette_drift.release.production import compare_on_window
    from imagenette_drift.release.window import exclude_trained, select_window

    try:
        records = select_window(args.log, champion.sha256, window, args.monitor_out)
        if args.exclude_trained:
            records = exclude_trained(records, args.exclude_trained)
    except (UserError, OSError) as e:
        raise UserError(f"--log: {e}") from e
    comparison = compare_on_window(candidate, champion, records, args.window_tolerance, args.batch_size)
    if not comparison.compared:
        print(f"imagenette gate: warning: {comparison.reason}", file=sys.stderr)
    return with_production(decision, comparison)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.options(GateOptions, argv)
    args.registry = args.registry or os.environ.get(REGISTRY_ENV_VAR) or None
    if not 0 <= args.tolerance < 1 or not 0 <= args.min_accuracy <= 1 or not 0 <= args.window_tolerance < 1:
        parser.error(
            "--tolerance and --window_tolerance must be in [0, 1) and --min_accuracy in [0, 1] (fractions, not "
            "percents)"
        )
    window = None
    if args.log is not None:
        if args.champion is None:
            parser.error("--log needs --champion: the production window is the traffic the champion served.")
        from imagenette_drift.release.window import WindowChoice

        try:
            window = WindowChoice.parse(args.window)
        except ValueError as e:
            parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    candidate = _load(args.candidate, "--candidate", args)
    champion = None if args.champion is None else _load(args.champion, "--champion", args)
    if champion is not None and champion.card.wnids != candidate.card.wnids:
        raise BadCheckpointError(
            "--candidate and --champion predict different classes (their model cards' wnids differ); the gate "
            "compares models of the same task only."
        )
    try:
        split = scan_split(resolve_root(args.data.root), "val", candidate.card.wnids)
    except UserError as e:
        raise type(e)(f"--data.root: {e}") from e
    decision = decide(
        evaluate(candidate, split, args.candidate, args.batch_size),
        None if champion is None else evaluate(champion, split, args.champion, args.batch_size),
        args.tolerance,
        args.min_accuracy,
    )
    if window is not None and champion is not None:
        decision = _on_window(decision, candidate, champion, window, args)
    print(format_table(decision))
    write_outputs(decision, args.output)
    sys.stdout.flush()
    if not decision.passed:
        print(f"imagenette gate: refused: {decision.reason}", file=sys.stderr)
        raise SystemExit(REFUSED_EXIT)
