"""`imagenette drift`: test a folder of images (optionally corrupted) against a checkpoint's drift reference."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.commands._options import AliasedStore, add_checkpoint_option
from imagenette_drift.data.images import read_image
from imagenette_drift.data.layout import list_images
from imagenette_drift.data.root import resolve_root
from imagenette_drift.drift.assessment import WindowAssessor, assess_windows, format_assessment
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.reference_size import ReferenceTooSmallError, check_reference_size
from imagenette_drift.drift.windows import run_window_tests, window_tests
from imagenette_drift.embedding import embed_folder, tested_transform
from imagenette_drift.errors import BadCheckpointError, BadDataError, UserError
from imagenette_drift.explanation.report import add_thumbnails, write_drift_markdown
from imagenette_drift.reports.drift import format_table, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenette drift",
        description="Test images for drift against the reference stored in a checkpoint; print a table and "
        "write drift_report.json, drift_report.png and drift_report.md (with witness thumbnails). Flags are "
        "spelled as in `imagenette predict`.",
        allow_abbrev=False,
    )
    add_checkpoint_option(parser, "a .ckpt written by `imagenette fit`", required=True, type=Path)
    parser.add_argument(
        "--data.root",
        dest="root",
        type=Path,
        default=None,
        help="data root whose val/ folder is tested (default: $IMAGENETTE_DATA, else data/imagenette2-160)",
    )
    parser.add_argument(
        "--data.predict_dir",
        "--data",
        dest="predict_dir",
        action=AliasedStore,
        type=Path,
        default=None,
        metavar="FOLDER",
        help="any folder of images, searched recursively, tested instead of the root's val/ (--data: deprecated "
        "spelling)",
    )
    parser.add_argument(
        "--data.corruption",
        "--corruption",
        dest="corruption",
        action=AliasedStore,
        default=None,
        help="an ImageNet-C corruption to apply (needs the extra; --corruption: deprecated spelling)",
    )
    parser.add_argument(
        "--data.severity",
        "--severity",
        dest="severity",
        action=AliasedStore,
        type=int,
        default=3,
        choices=range(1, 6),
        help="corruption severity 1-5 (--severity: deprecated spelling)",
    )
    parser.add_argument(
        "--window", type=int, default=None, help="images per window (default: the reference's)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="test a seeded random subset of this many images"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset and of the window shuffling")
    parser.add_argument("--output", type=Path, default=Path("outputs/drift"), help="folder for the report")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--harm-drop",
        type=float,
        default=5.0,
        help="harm alert: estimated accuracy more than this many points below the held-out accuracy ...",
    )
    parser.add_argument(
        "--harm-windows", type=int, default=2, help="... for this many consecutive windows (default 2)"
    )
    parser.add_argument(
        "--harm-method",
        default=None,
        choices=("atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "nuclear"),
        help="the accuracy estimate the harm alert watches (default: the card's, cot; atc_mc on older cards)",
    )
    parser.add_argument(
        "--refit-reference",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="refit the checkpoint's drift reference on this folder of in-distribution images (searched "
        "recursively; e.g. held-out images of the training data), for windows of --window (default: the "
        "reference's), write the checkpoint with it to --output/model.ckpt, and exit",
    )
    parser.add_argument(
        "--reference-root",
        type=Path,
        default=None,
        help="the training data root of the checkpoint: drift_report.md shows each witness image beside a "
        "thumbnail of its nearest held-out image from it (default: the --data.root, $IMAGENETTE_DATA or "
        "data/imagenette2-160)",
    )
    return parser


def _tested_image(transform: v2.Transform, path: Path) -> Image.Image:
    """The image as the model saw it (after the transform and any corruption), for a thumbnail."""
    return Image.fromarray(transform(read_image(path)).permute(1, 2, 0).numpy())


def refit_reference(model: InferenceModel, reference: DriftReference, args: argparse.Namespace) -> Path:
    """Refit the drift reference on `--refit-reference`'s images (as the DriftCallback fits it: at most 1,000,
    seeded) and write the checkpoint with it to `--output/model.ckpt` (temp file, then rename); the card's
    other fields (estimation, familiarity, explanation) are kept."""
    from imagenette_drift.card import CHECKPOINT_KEY
    from imagenette_drift.io import atomic_path

    try:
        paths = list(list_images(args.refit_reference))
    except UserError as e:
        raise type(e)(f"--refit-reference: {e}") from e
    window = args.window or reference.window_size
    check_reference_size(min(len(paths), 1000), window, lambda n: window_tests(reference, n))
    refitted = DriftReference.fit(*embed_folder(model, paths, batch_size=args.batch_size), window_size=window)
    state = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)
    state[CHECKPOINT_KEY]["drift"] = refitted.state_dict()
    dest = args.output / "model.ckpt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        torch.save(state, tmp)
    print(
        f"refitted the drift reference on {refitted.n_reference} images of {args.refit_reference} for windows "
        f"of {window} (was {reference.n_reference} images); wrote {dest}"
    )
    return dest


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.corruption is not None:
        from imagenette_drift.corruptions import CORRUPTIONS

        if args.corruption not in CORRUPTIONS:
            parser.error(f"--data.corruption {args.corruption!r} is not one of: {', '.join(CORRUPTIONS)}")
    model = load_for_inference(args.ckpt_path)  # a UserError: `imagenette` prints it as one line
    if model.card.drift is None:
        raise BadCheckpointError(
            f"{args.ckpt_path} carries no drift reference: train with the DriftCallback (in the project's "
            "configs) and --data.val_fraction > 0."
        )
    reference = DriftReference.from_state_dict(model.card.drift)
    if args.refit_reference is not None:
        refit_reference(model, reference, args)
        return {}
    folder = args.predict_dir if args.predict_dir is not None else resolve_root(args.root) / "val"
    flag = "--data.predict_dir" if args.predict_dir is not None else "--data.root"
    try:
        paths = list(list_images(folder))
    except UserError as e:
        raise type(e)(f"{flag}: {e}") from e
    if args.limit is not None and args.limit < len(paths):
        paths = sorted(random.Random(args.seed).sample(paths, args.limit))
    if len(paths) < 2:
        raise BadDataError(f"{flag}: {folder} holds {len(paths)} image(s); drift tests need at least 2.")
    if args.window is not None and args.window < 2:
        raise UserError(
            f"--window {args.window}: a window needs at least 2 images; pass a --window of 2 or more "
            "(or omit it for the reference's)."
        )
    window = args.window
    clamped = window is not None and window > len(paths)
    if clamped:
        # A small folder (the sample, a pipeline's smoke data): one window of everything, said as it is.
        window = len(paths)
    tested = window or min(reference.window_size, len(paths))
    try:
        check_reference_size(reference.n_reference, tested, lambda n: window_tests(reference, n))
    except ReferenceTooSmallError as e:
        if not clamped:
            raise
        raise ReferenceTooSmallError(
            f"--window {args.window} is more than the folder's {len(paths)} images, so they would be tested as one "
            f"window of {len(paths)}: {str(e)[0].lower()}{str(e)[1:]}"
        ) from None
    if clamped:
        print(
            f"--window {args.window} is more than the {len(paths)} images: testing them as one window of {len(paths)}."
        )
    embeddings, probs, stats = embed_folder(model, paths, args.corruption, args.severity, args.batch_size)
    summary = run_window_tests(reference, embeddings, probs, stats, window, seed=args.seed)
    # What the model says the images are, by the checkpoint's class names (its data's class folders).
    counts = torch.bincount(probs.argmax(dim=1), minlength=model.card.num_classes).tolist()
    summary["predicted_classes"] = dict(zip(model.card.class_names, counts, strict=True))
    try:
        assessor = WindowAssessor.from_card(model.card, args.harm_drop, args.harm_windows, args.harm_method)
    except ValueError as e:  # a card field this version cannot read
        raise BadCheckpointError(f"{args.ckpt_path}: {e}") from e
    assess_windows(summary, assessor, embeddings, probs, stats, seed=args.seed)
    transform = tested_transform(model, args.corruption, args.severity)
    reference_root = args.reference_root or resolve_root(args.root)
    for explanation in summary["explanations"]:
        for witness in explanation["witnesses"]:
            witness["path"] = str(paths[witness["index"]])
        add_thumbnails(
            explanation,
            args.output,
            f"w{explanation['window']}",
            lambda w: _tested_image(transform, Path(w["path"])),
            reference_root if reference_root.is_dir() else None,
        )
    summary["source"] = {
        "checkpoint": str(args.ckpt_path),
        "checkpoint_sha256": model.sha256,
        "data": str(folder),
        "corruption": args.corruption,
        "severity": args.severity if args.corruption else None,
    }
    print(format_table(summary))
    print("predicted: " + ", ".join(f"{name} {n}" for name, n in summary["predicted_classes"].items() if n))
    print(format_assessment(summary))
    json_path, png_path = write_report(summary, args.output)
    md_path = write_drift_markdown(summary, args.output)
    print(f"wrote {json_path}, {png_path} and {md_path}")
    return summary
