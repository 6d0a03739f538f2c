"""`imagenette export-labelled`: the logged images that have a /feedback label, as an ImageFolder training set."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagenette_drift.commands._options import CommandParser
from imagenette_drift.errors import UserError


@dataclass
class ExportLabelledOptions:
    """Options of `imagenette export-labelled`.

    Args:
        log: The inference log: a folder or gs://BUCKET/PREFIX.
        output: The folder to create.
        base: A data root (train/<wnid>/..., val/) to merge in as symlinks, e.g. data/imagenette2-160.
    """

    log: str
    output: Path
    base: Path | None = None


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette export-labelled",
        "Join the inference log's images (written by `serve --log_images`) with the labels posted to the "
        "token-protected POST /feedback (on request_id; the latest label wins) and write them as "
        "OUTPUT/train/<wnid>/log-<request_id>.<ext>; with --base, that data root's train images and val/ are "
        "linked in too, so OUTPUT is a data root for `imagenette fit --data.root`. OUTPUT must not exist; it "
        "appears complete or not at all. Writes OUTPUT/export.json with the counts.",
        ExportLabelledOptions,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().options(ExportLabelledOptions, argv)
    from imagenette_drift.release.labelled import SUMMARY_NAME, export_labelled

    try:
        summary = export_labelled(args.log, args.output, args.base)
    except OSError as e:  # a local log folder that cannot be read; storage failures are UserErrors already
        if isinstance(e, UserError):
            raise
        raise UserError(f"--log {args.log}: {e}") from e
    for name, reason in summary.skipped_files.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    classes = ", ".join(f"{w} {n}" for w, n in summary.per_class.items())
    print(f"exported {summary.exported} labelled logged image(s) to {args.output / 'train'}: {classes}")
    if args.base is not None:
        linked = sum(summary.base_per_class.values())
        print(
            f"linked {linked} training image(s) of {args.base} beside them"
            + (" and its val/" if (args.output / "val").exists() else "")
        )
    print(
        f"skipped: {summary.skipped_unlabelled} unlabelled record(s), {summary.skipped_imageless} labelled "
        f"record(s) without an image, {summary.orphan_labels} label(s) with no record in the log "
        f"(of {summary.records} records, {summary.labels} labels); counts in {args.output / SUMMARY_NAME}",
        flush=True,
    )
