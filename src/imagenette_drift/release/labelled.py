"""Turn the logged images that have a feedback label into an ImageFolder training set (`train/<wnid>/...`).

A prediction record (with its image, `serve --log_images`) and a label record are joined on `request_id`; the
latest label of a request wins. Label records are written by the authenticated `POST /feedback` only, so
every label used here came with the server's bearer token. With a base data set, its training images are
linked (symlinks) beside the logged ones and its `val/` (the test set) is linked too, so the result is a data
root `imagenette fit --data.root` trains on. The folder appears complete or not at all: it is built under a
temporary name beside the target and renamed at the end.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from imagenette_drift.data.layout import IMAGE_SUFFIXES, find_class_folders
from imagenette_drift.errors import BadDataError, MissingDataError
from imagenette_drift.inference_log.reader import list_files, open_log, read_columns, read_labels, read_rows

SUMMARY_NAME = "export.json"
LOGGED_PREFIX = "log-"  # logged images are named log-<request_id>.<ext>, never clashing with the base's names
# Pillow's format name -> the file suffix the data module reads; other formats are re-encoded as PNG.
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class ExportSummary:
    """What went into the training set and what was left out, as `export.json` stores it.

    Attributes:
        per_class: Logged images written per class wnid.
        base_per_class: Base training images linked per class wnid (empty without a base).
        records: Distinct prediction records in the log.
        labels: Requests with a feedback label.
        skipped_unlabelled: Records with no label (not used).
        skipped_imageless: Labelled records logged without their image (server ran without --log_images).
        orphan_labels: Labels whose request has no prediction record in the log (not flushed yet, or deleted).
        skipped_files: Log files that could not be read (path -> reason).
    """

    output: str
    log: str
    base: str | None
    per_class: dict[str, int]
    base_per_class: dict[str, int]
    records: int
    labels: int
    skipped_unlabelled: int
    skipped_imageless: int
    orphan_labels: int
    skipped_files: dict[str, str] = field(default_factory=dict)

    @property
    def exported(self) -> int:
        return sum(self.per_class.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"exported": self.exported}


def export_labelled(log: str, output: Path, base: Path | None = None) -> ExportSummary:
    """Write `output/train/<wnid>/log-<request_id>.<ext>` for each labelled logged image (plus the base's).

    Args:
        log: The inference log root (a folder or gs://BUCKET/PREFIX).
        output: The folder to create; it must not exist yet.
        base: A data root (`train/<wnid>/*`, optionally `val/`) whose images are linked in beside them.

    Raises:
        BadDataError: `output` exists, or a label is not a class of the base (or not a valid folder name).
        MissingDataError: `base` has no train/ folder, or the log holds no labelled image to export (a base
            alone is no new training set).
    """
    output = Path(output)
    if output.exists():
        raise BadDataError(f"--output {output} already exists; pass a new folder (the export never merges).")
    base_classes = _base_classes(base)
    location = open_log(log)
    labels, skipped = read_labels(location)
    found = list_files(location, "predictions")
    skipped |= found.skipped
    ids = read_columns(location, found.files, ["request_id"])
    record_ids = pc.unique(ids["request_id"]) if ids.num_rows else pa.array([], pa.string())
    labelled_files = sorted(
        {
            found.files[i]
            for i in ids.filter(pc.is_in(ids["request_id"], value_set=labels["request_id"]))[
                "file"
            ].to_pylist()
        }
    )
    rows = read_rows(location, labelled_files, labels["request_id"], ["request_id", "format", "image"])
    label_of = dict(zip(labels["request_id"].to_pylist(), labels["label_wnid"].to_pylist(), strict=True))
    with_image = rows.filter(rows["image"].is_valid())
    _check_labels({label_of[r] for r in with_image["request_id"].to_pylist()}, base_classes, base)
    summary = ExportSummary(
        output=str(output),
        log=str(log),
        base=None if base is None else str(base),
        per_class={},
        base_per_class={},
        records=len(record_ids),
        labels=labels.num_rows,
        skipped_unlabelled=len(record_ids) - rows.num_rows,
        skipped_imageless=rows.num_rows - with_image.num_rows,
        orphan_labels=labels.num_rows - rows.num_rows,
        skipped_files=skipped,
    )
    if not with_image.num_rows:
        raise MissingDataError(
            f"the log {log} holds no labelled image to export ({summary.labels} label(s), "
            f"{summary.skipped_imageless} of them on records without an image: serve with --log_images)."
        )
    _build(output, with_image, label_of, base, base_classes, summary)
    return summary


def _base_classes(base: Path | None) -> tuple[str, ...]:
    if base is None:
        return ()
    if not (Path(base) / "train").is_dir():
        raise MissingDataError(
            f"--base {base} has no train/ folder; pass a data root such as data/imagenette2-160."
        )
    return find_class_folders(Path(base) / "train")


def _check_labels(wnids: set[str], base_classes: tuple[str, ...], base: Path | None) -> None:
    bad = sorted(w for w in wnids if not _SAFE_NAME.fullmatch(w))
    if bad:
        raise BadDataError(
            f"label(s) {bad[:5]} are not class folder names; the log's label files are not ours."
        )
    unknown = sorted(wnids - set(base_classes)) if base is not None else []
    if unknown:
        raise BadDataError(
            f"labels {unknown} are not classes of --base {base} (its train/ holds {', '.join(base_classes)}); "
            "pass the base the model was trained on."
        )


def _build(
    output: Path,
    rows: pa.Table,
    label_of: dict[str, str],
    base: Path | None,
    base_classes: tuple[str, ...],
    summary: ExportSummary,
) -> None:
    """Write everything under a temporary sibling folder, then rename it to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        train = tmp / "train"
        for wnid in base_classes:
            summary.base_per_class[wnid] = _link_base(Path(base) / "train" / wnid, train / wnid)
        for rid, fmt, data in zip(
            *(rows[c].to_pylist() for c in ("request_id", "format", "image")), strict=True
        ):
            wnid = label_of[rid]
            folder = train / wnid
            folder.mkdir(parents=True, exist_ok=True)
            _write_image(folder, rid, fmt, data)
            summary.per_class[wnid] = summary.per_class.get(wnid, 0) + 1
        summary.per_class = dict(sorted(summary.per_class.items()))
        if base is not None:
            for name in ("val", "noisy_imagenette.csv"):
                if (Path(base) / name).exists():
                    (tmp / name).symlink_to((Path(base) / name).resolve())
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_base(source: Path, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in files:
        (dest / path.name).symlink_to(path.resolve())
    return len(files)


def logged_stem(request_id: str) -> str:
    """The file name (without suffix) of a request's exported image: `log-<request_id>`, `:` made `_`."""
    return LOGGED_PREFIX + request_id.replace(":", "_")


def exported_stems(root: Path) -> set[str]:
    """The `logged_stem` of every logged image under `root/train`: the export's own, and those of a base that
    was itself an export (linked in)."""
    return {p.stem for p in (Path(root) / "train").glob(f"*/{LOGGED_PREFIX}*")}


def _write_image(folder: Path, request_id: str, fmt: str, data: bytes) -> None:
    """The logged bytes as they are (known formats), else re-encoded as PNG so the data module reads them."""
    stem = logged_stem(request_id)
    suffix = SUFFIXES.get(fmt)
    if suffix is not None:
        (folder / f"{stem}{suffix}").write_bytes(data)
        return
    with Image.open(io.BytesIO(data)) as image:
        image.save(folder / f"{stem}.png", format="PNG")
