"""Pick the small real sample of Imagenette-160 that ships in the repo (`data/sample/imagenette2-160`).

Usage: python scripts/make_sample.py --source ../shared/data/imagenette2-160 [--train 8 --val 4]

The pick is deterministic: for each class and split, the files with the smallest sha256 of their
relative path, so re-running the script on the official data reproduces the same sample.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from pathlib import Path

from imagenette_drift.classes import WNIDS


def pick(source: Path, split: str, wnid: str, count: int) -> list[str]:
    """Return `count` relative paths of `split/wnid`, chosen by hash order."""
    files = sorted(p.relative_to(source).as_posix() for p in (source / split / wnid).glob("*.JPEG"))
    if len(files) < count:
        raise ValueError(
            f"{source / split / wnid} has {len(files)} images, fewer than the {count} asked for."
        )
    return sorted(files, key=lambda rel: hashlib.sha256(rel.encode()).hexdigest())[:count]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the full imagenette2-160 folder")
    parser.add_argument("--dest", type=Path, default=Path("data/sample/imagenette2-160"))
    parser.add_argument("--train", type=int, default=8, help="images per class from train/")
    parser.add_argument("--val", type=int, default=4, help="images per class from val/")
    args = parser.parse_args(argv)

    chosen = {rel for wnid in WNIDS for rel in pick(args.source, "train", wnid, args.train)}
    chosen |= {rel for wnid in WNIDS for rel in pick(args.source, "val", wnid, args.val)}
    if args.dest.exists():
        shutil.rmtree(args.dest)
    for rel in sorted(chosen):
        (args.dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.source / rel, args.dest / rel)
    with open(args.source / "noisy_imagenette.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for row in reader if row[0] in chosen]
    with open(args.dest / "noisy_imagenette.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {len(chosen)} images and {len(rows)} CSV rows to {args.dest}")


if __name__ == "__main__":
    main()
