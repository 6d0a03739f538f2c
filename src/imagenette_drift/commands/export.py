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

import torch

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.checkpoint import load_for_inference, read_checkpoint
from imagenette_drift.commands._options import CommandParser
from imagenette_drift.errors import one_line
from imagenette_drift.io import atomic_path

# What a serving copy keeps: the weights and the card, plus what Lightning reads to test or predict from it.
KEPT_KEYS = (
    CHECKPOINT_KEY,
    "state_dict",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "hyper_parameters",
    "hparams_name",
)


def export_checkpoint(source: str | Path, dest: str | Path) -> dict[str, int | str]:
    """Write the serving copy of `source` to `dest` atomically; return sizes and the new file's sha256.

    The copy is loaded back (`weights_only`, the network built from its card) before it replaces `dest`, so a
    failed export never leaves a half-written or unusable file behind.
    """
    source, dest = Path(source), Path(dest)
    if source.resolve() == dest.resolve():
        raise ValueError(f"--output {dest} is the checkpoint itself; write the export to another path.")
    checkpoint = read_checkpoint(source)
    slim = {key: checkpoint[key] for key in KEPT_KEYS if key in checkpoint}
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:  # a file object: the archive's inner name is fixed, not the temp file's,
            torch.save(slim, f)  # so the same checkpoint always exports to the same bytes (and sha256)
        loaded = load_for_inference(tmp)  # the copy must load as the server will load it (and is hashed so)
    return {
        "source_bytes": source.stat().st_size,
        "output_bytes": dest.stat().st_size,
        "sha256": loaded.sha256,
    }


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
