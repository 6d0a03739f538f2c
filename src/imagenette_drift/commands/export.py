"""`imagenette export`: a serving copy of a checkpoint, without the optimizer state that only resuming needs.

A `.ckpt` from `imagenette fit` carries SGD's momentum buffers (as large as the weights themselves) and the
loops' progress, so that training can resume. Serving, drift monitoring, `imagenette test` and the app need only
the weights and the model card (class names, preprocessing, drift reference): the export keeps those, about
half the size, which halves the download from GCS at every cold start.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagenette_drift.checkpoint import export_checkpoint
from imagenette_drift.commands._options import CommandParser
from imagenette_drift.errors import one_line


@dataclass
class ExportOptions:
    """Options of `imagenette export`.

    Args:
        ckpt_path: A .ckpt written by `imagenette fit`.
        output: Where to write the serving copy.
    """

    ckpt_path: Path
    output: Path


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette export",
        "Write a serving copy of a checkpoint: weights and model card (class names, preprocessing, drift "
        "reference), without the optimizer state. Serve it, test it, or upload it to GCS; resume training from "
        "the original.",
        ExportOptions,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().options(ExportOptions, argv)
    try:
        result = export_checkpoint(args.ckpt_path, args.output)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"imagenette export: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"{args.output}: {result['output_bytes'] / 1e6:.1f} MB (from {result['source_bytes'] / 1e6:.1f} MB), "
        f"sha256 {result['sha256']}"
    )
