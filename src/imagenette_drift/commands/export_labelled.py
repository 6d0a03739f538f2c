"""`imagenette export-labelled`: the logged images that have a /feedback label, as an ImageFolder training set."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from imagenette_drift.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenette export-labelled",
        description="Join the inference log's images (written by `serve --log-images`) with the labels posted "
        "to the token-protected POST /feedback (on request_id; the latest label wins) and write them as "
        "OUTPUT/train/<wnid>/log-<request_id>.<ext>; with --base, that data root's train images and val/ are "
        "linked in too, so OUTPUT is a data root for `imagenette fit --data.root`. OUTPUT must not exist; it "
        "appears complete or not at all. Writes OUTPUT/export.json with the counts.",
        allow_abbrev=False,
    )
    parser.add_argument("--log", required=True, help="the inference log: a folder or gs://BUCKET/PREFIX")
    parser.add_argument("--output", type=Path, required=True, help="the folder to create")
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a data root (train/<wnid>/..., val/) to merge in as symlinks, e.g. data/imagenette2-160",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
