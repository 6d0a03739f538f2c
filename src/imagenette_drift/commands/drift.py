"""`imagenette drift`: test a folder of images (optionally corrupted) against a checkpoint's drift reference."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.commands._options import CommandParser
from imagenette_drift.data.images import read_image
from imagenette_drift.data.layout import list_images
from imagenette_drift.data.root import resolve_root
from imagenette_drift.drift.assessment import WindowAssessor, assess_windows, format_assessment
from imagenette_drift.drift.reference import DriftReference, ReferenceSettings
from imagenette_drift.drift.reference_size import ReferenceTooSmallError, check_reference_size
from imagenette_drift.drift.windows import run_window_tests, window_tests
from imagenette_drift.embedding import embed_folder, tested_transform
from imagenette_drift.errors import BadCheckpointError, BadDataError, UserError
from imagenette_drift.explanation.report import add_thumbnails, write_drift_markdown
from imagenette_drift.reports.drift import format_table, write_report

HarmMethod = Literal["atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "cot_ls", "nuclear"]


@dataclass
class DriftData:
    """Which images are tested, spelled as `imagenette predict`'s data options.

    Args:
        root: Data root whose val/ folder is tested (default: $IMAGENETTE_DATA, else data/imagenette2-160).
        predict_dir: Any folder of images, searched recursively, tested instead of the root's val/.
        corruption: An ImageNet-C corruption to apply (needs the `corruptions` extra).
        severity: Corruption severity, 1-5.
    """

    root: Path | None = None
    predict_dir: Path | None = None
    corruption: str | None = None
    severity: Literal[1, 2, 3, 4, 5] = 3


@dataclass
class DriftOptions:
    """Options of `imagenette drift`.

    Args:
        ckpt_path: A .ckpt written by `imagenette fit`.
        data: The images tested.
        window: Images per window (default: the reference's).
        limit: Test a seeded random subset of this many images.
        batch_size: Images per forward pass.
        seed: Seed of the subset and of the window shuffling.
        output: Folder for the report.
        threads: Torch CPU threads (default: torch's choice).
        harm_drop: Harm alert: estimated accuracy more than this many points below the held-out accuracy ...
        harm_windows: ... for this many consecutive windows.
        harm_method: The accuracy estimate the harm alert watches (default: the card's primary, cot_ls; cot
            or atc_mc on older cards).
        refit_reference: Refit the checkpoint's drift reference on this folder of in-distribution images
            (searched recursively; e.g. held-out images of the training data), for windows of --window
            (default: the reference's), write the checkpoint with it to --output/model.ckpt, and exit.
        reference_root: The training data root of the checkpoint: drift_report.md shows each witness image
            beside a thumbnail of its nearest held-out image from it (default: the --data.root,
            $IMAGENETTE_DATA or data/imagenette2-160).
    """

    ckpt_path: Path
    data: DriftData = field(default_factory=DriftData)
    window: int | None = None
    limit: int | None = None
    batch_size: int = 64
    seed: int = 0
    output: Path = Path("outputs/drift")
    threads: int | None = None
    harm_drop: float = 5.0
    harm_windows: int = 2
    harm_method: HarmMethod | None = None
    refit_reference: Path | None = None
    reference_root: Path | None = None


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette drift",
        "Test images for drift against the reference stored in a checkpoint; print a table and write "
        "drift_report.json, drift_report.png and drift_report.md (with witness thumbnails). Flags are spelled "
        "as in `imagenette predict`.",
        DriftOptions,
    )


def _tested_image(transform: v2.Transform, path: Path) -> Image.Image:
    """The image as the model saw it (after the transform and any corruption), for a thumbnail."""
    return Image.fromarray(transform(read_image(path)).permute(1, 2, 0).numpy())


def refit_reference(model: InferenceModel, reference: DriftReference, args: DriftOptions) -> Path:
    """Refit the drift reference on `--refit_reference`'s images (as the DriftCallback fits it: at most 1,000,
    seeded) and write the checkpoint with it to `--output/model.ckpt` (temp file, then rename); the card's
    other fields (estimation, familiarity, explanation) are kept."""
    from imagenette_drift.card import CHECKPOINT_KEY
    from imagenette_drift.io import atomic_path

    try:
        paths = list(list_images(args.refit_reference))
    except UserError as e:
        raise type(e)(f"--refit_reference: {e}") from e
    window = args.window or reference.window_size
    check_reference_size(min(len(paths), 1000), window, lambda n: window_tests(reference, n))
    refitted = DriftReference.fit(
        *embed_folder(model, paths, batch_size=args.batch_size),
        settings=ReferenceSettings(window_size=window),
    )
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
    args = parser.options(DriftOptions, argv)
    data = args.data
    if args.threads:
        torch.set_num_threads(args.threads)
    if data.corruption is not None:
        from imagenette_drift.corruptions import CORRUPTIONS

        if data.corruption not in CORRUPTIONS:
            parser.error(f"--data.corruption {data.corruption!r} is not one of: {', '.join(CORRUPTIONS)}")
    model = load_for_inference(args.ckpt_path)  # a UserError: `imagenette` prints it as one line
    if model.card.drift is None:
        raise BadCheckpointError(
            f"{args.ckpt_path} carries no drift reference: train with the DriftCallback (in the project's "
            "configs) and --data.val_fraction > 0."
        )
    reference = DriftReference.from_state_dict(model.card.drift)
    if args.window is not None and args.window < 2:
        raise UserError(
            f"--window {args.window}: a window needs at least 2 images; pass a --window of 2 or more "
            "(or omit it for the reference's)."
        )
    if args.refit_reference is not None:
        refit_reference(model, reference, args)
        return {}
    folder = data.predict_dir if data.predict_dir is not None else resolve_root(data.root) / "val"
    flag = "--data.predict_dir" if data.predict_dir is not None else "--data.root"
    try:
        paths = list(list_images(folder))
    except UserError as e:
        raise type(e)(f"{flag}: {e}") from e
    if args.limit is not None and args.limit < len(paths):
        paths = sorted(random.Random(args.seed).sample(paths, args.limit))
    if len(paths) < 2:
        raise BadDataError(f"{flag}: {folder} holds {len(paths)} image(s); drift tests need at least 2.")
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
    embeddings, probs, stats = embed_folder(model, paths, data.corruption, data.severity, args.batch_size)
    summary = run_window_tests(reference, embeddings, probs, stats, window, seed=args.seed)
    # What the model says the images are, by the checkpoint's class names (its data's class folders).
    counts = torch.bincount(probs.argmax(dim=1), minlength=model.card.num_classes).tolist()
    summary["predicted_classes"] = dict(zip(model.card.class_names, counts, strict=True))
    try:
        assessor = WindowAssessor.from_card(model.card, args.harm_drop, args.harm_windows, args.harm_method)
    except ValueError as e:  # a card field this version cannot read
        raise BadCheckpointError(f"{args.ckpt_path}: {e}") from e
    assess_windows(summary, assessor, embeddings, probs, stats, seed=args.seed)
    transform = tested_transform(model, data.corruption, data.severity)
    reference_root = args.reference_root or resolve_root(data.root)
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
        "corruption": data.corruption,
        "severity": data.severity if data.corruption else None,
    }
    print(format_table(summary))
    print("predicted: " + ", ".join(f"{name} {n}" for name, n in summary["predicted_classes"].items() if n))
    print(format_assessment(summary))
    json_path, png_path = write_report(summary, args.output)
    md_path = write_drift_markdown(summary, args.output)
    print(f"wrote {json_path}, {png_path} and {md_path}")
    return summary
