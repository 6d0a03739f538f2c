"""A drifting window's explanation in a Markdown report, with witness thumbnails beside their nearest references.

Shared by `imagenette drift` (drift_report.md) and `imagenette monitor` (monitor_report.md): the same
`serve_contract.DriftExplanation` renders the same way. Thumbnails are small JPEG files written next to the report
(`thumbnails/`), only when the images are available; Pillow only, no torch.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from imagenette_drift.io import atomic_path
from imagenette_drift.serve_contract import DriftExplanation, WitnessImage

__all__ = [
    "THUMBNAIL_DIR",
    "add_thumbnails",
    "explanation_markdown",
    "write_drift_markdown",
    "write_thumbnail",
]

THUMBNAIL_DIR = "thumbnails"
THUMBNAIL_SIZE = 96  # longest side in pixels


def write_thumbnail(image: Image.Image | bytes | Path, dest: Path, size: int = THUMBNAIL_SIZE) -> Path:
    """Write `image` (a PIL image, encoded bytes or a file) as a JPEG of at most `size` px per side, atomically.

    Raises:
        OSError: the bytes or file are no image Pillow can read (the caller skips that thumbnail).
    """
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, Path):
        image = Image.open(image)
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    with atomic_path(dest) as tmp:
        thumb.save(tmp, format="JPEG", quality=85)
    return dest


def add_thumbnails(
    explanation: dict[str, Any],
    out_dir: Path,
    name: str,
    witness_image: Callable[[dict[str, Any]], Image.Image | bytes | None],
    reference_root: Path | None,
) -> int:
    """Write a thumbnail of each witness and of its nearest reference image; set `thumbnail` and
    `nearest_thumbnail` (paths relative to `out_dir`) on the explanation's witness dicts.

    Args:
        explanation: a `DriftExplanation` as a dict (changed in place).
        name: file-name stem of this window's thumbnails, e.g. ``w3``.
        witness_image: the witness's image (as tested), or None when it is not available.
        reference_root: the training data root that `nearest_reference_path` is relative to (None: skipped).
    Returns the number of thumbnails written. An unreadable image is skipped, never an error.
    """
    written = 0
    for rank, witness in enumerate(explanation.get("witnesses") or []):
        sources = {
            "thumbnail": (witness_image(witness), f"{name}-{rank}.jpg"),
            "nearest_thumbnail": (_reference(reference_root, witness), f"{name}-{rank}-ref.jpg"),
        }
        for key, (image, file_name) in sources.items():
            if image is None:
                continue
            relative = f"{THUMBNAIL_DIR}/{file_name}"
            try:
                write_thumbnail(image, out_dir / relative)
            except OSError:
                continue
            witness[key] = relative
            written += 1
    return written


def _reference(root: Path | None, witness: dict[str, Any]) -> Path | None:
    relative = witness.get("nearest_reference_path")
    if root is None or not relative:
        return None
    path = Path(root) / relative
    return path if path.is_file() else None


def explanation_markdown(explanation: DriftExplanation, title: str) -> list[str]:
    """Markdown lines: what the window looks like, the classes that moved (shares, residuals, BBSE), and the
    witness images beside their nearest reference images (thumbnails where written)."""
    looks = explanation.looks_like
    if isinstance(looks, list):
        looks = ", ".join(f"{m.corruption} ({m.similarity:.2f})" for m in explanation.signatures)
    elif explanation.signatures:
        best = explanation.signatures[0]
        looks = f"{looks} (closest: {best.corruption}, {best.similarity:.2f})"
    lines = [
        f"### {title}",
        "",
        f"- Looks like: **{looks}**",
        f"- Classes moved (|chi-squared residual| >= 3): {', '.join(explanation.moved_classes) or 'none'}",
        "",
        "| class | share | held-out share | residual | BBSE true share |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sorted(explanation.classes, key=lambda r: -abs(r.residual)):
        bbse = "-" if row.bbse_share is None else f"{row.bbse_share:.3f}"
        lines.append(
            f"| {row.label} | {row.share:.3f} | {row.reference_share:.3f} | {row.residual:+.2f} | {bbse} |"
        )
    if explanation.witnesses:
        lines += [
            "",
            "Images that drive the drift (largest MMD witness value), beside their nearest held-out image:",
            "",
            "| witness | image | nearest held-out image |",
            "|---:|---|---|",
        ]
        lines += [_witness_row(w) for w in explanation.witnesses]
    return [*lines, ""]


def _witness_row(witness: WitnessImage) -> str:
    name = witness.path or witness.request_id or (f"image {witness.image}" if witness.image else "-")
    image = f"![witness]({witness.thumbnail}) " if witness.thumbnail else ""
    reference = f"![nearest]({witness.nearest_thumbnail}) " if witness.nearest_thumbnail else ""
    return (
        f"| {witness.witness:.4f} | {image}`{name}` | {reference}`{witness.nearest_reference_path or '-'}` |"
    )


def write_drift_markdown(summary: dict[str, Any], out_dir: Path, name: str = "drift_report") -> Path:
    """`<name>.md` of an `imagenette drift` summary: the tests, the accuracy estimates and harm, and each
    drifting window's explanation (with the thumbnails already written by `add_thumbnails`)."""
    from imagenette_drift.io import write_text_atomic

    source = summary.get("source") or {}
    corruption = (
        f", corruption {source['corruption']} (severity {source['severity']})"
        if source.get("corruption")
        else ""
    )
    lines = [
        f"# Drift report: {source.get('data', '')}{corruption}",
        "",
        f"{summary['n_images']} images in {summary['n_windows']} window(s) of {summary['window_size']}, "
        f"alpha {summary['alpha']}: **{'DRIFT' if summary['drift'] else 'no drift'}**.",
        "",
        "| test | windows flagged | median p-value |",
        "|---|---:|---:|",
    ]
    for method, m in summary["methods"].items():
        lines.append(f"| {method} | {m['flagged_fraction']:.0%} | {m['median_p_value']:.4g} |")
    accuracy = summary.get("accuracy")
    if accuracy:
        methods = ", ".join(f"{m} {v:.1%}" for m, v in accuracy["methods"].items())
        lines += [
            "",
            f"Estimated accuracy (mean over windows; held-out {accuracy['heldout']:.1%}): {methods}. "
            f"Harm: **{'YES' if accuracy['harm'] else 'no'}** ({accuracy['harm_windows']} window(s)).",
        ]
    lines += ["", f"![p-values per window]({name}.png)", ""]
    explanations = summary.get("explanations") or []
    if not explanations:
        lines += ["Nothing drifts: no window was flagged by a drift test.", ""]
    else:
        lines += ["## Why the drifting windows drift", ""]
        for e in explanations:
            lines += explanation_markdown(DriftExplanation(**e), f"Window {e['window']}")
    return write_text_atomic(Path(out_dir) / f"{name}.md", "\n".join(lines))
