"""Write the Gradio app's examples: real val images from the shipped sample plus corrupted variants.

Usage: python scripts/make_app_examples.py [--sample data/sample/imagenette2-160] [--dest app/examples]

Clean images are copied byte for byte (the app sends what a user would upload). Each corrupted variant is an
ImageNet-C corruption (`imagenette_drift.corruptions.corrupt`, seeded) of one of them, saved as a small JPEG;
they are what a drifting production stream looks like. Needs the `corruptions` extra.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from imagenette_drift.classes import CLASS_NAMES, WNIDS
from imagenette_drift.corruptions import corrupt
from imagenette_drift.io import atomic_path

# One val image of each of these classes; the first file of its folder in sorted order.
DEFAULT_CLASSES = ("tench", "English springer", "church", "parachute")
# (corruption, severity): strong enough that a window of them drifts away from the training embeddings.
DEFAULT_CORRUPTIONS = (("gaussian_noise", 5), ("defocus_blur", 5))


def _slug(text: str) -> str:
    return text.lower().replace(" ", "_")


def pick_image(sample: Path, class_name: str) -> Path:
    """The first val JPEG (sorted by name) of `class_name` in the sample."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"Unknown class {class_name!r}; choose from: {', '.join(CLASS_NAMES)}.")
    folder = sample / "val" / WNIDS[CLASS_NAMES.index(class_name)]
    files = sorted(folder.glob("*.JPEG"))
    if not files:
        raise FileNotFoundError(f"No JPEGs in {folder}; point --sample at an Imagenette-160 root.")
    return files[0]


def write_examples(sample: Path, dest: Path, quality: int = 80) -> list[Path]:
    """Copy one clean image per class and write its corrupted variants; return the written paths."""
    written = []
    for class_name in DEFAULT_CLASSES:
        source = pick_image(sample, class_name)
        clean = dest / f"{_slug(class_name)}.jpg"
        with atomic_path(clean) as tmp:
            shutil.copyfile(source, tmp)
            tmp.chmod(0o644)  # mkstemp's 0600 would hide the file from a server run by another user
        written.append(clean)
        with Image.open(source) as image:
            rgb = image.convert("RGB")
        for name, severity in DEFAULT_CORRUPTIONS:
            out = dest / f"{_slug(class_name)}-{name}-{severity}.jpg"
            with atomic_path(out) as tmp:
                Image.fromarray(corrupt(rgb, name, severity, seed=0)).save(tmp, "JPEG", quality=quality)
                tmp.chmod(0o644)
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=Path("data/sample/imagenette2-160"))
    parser.add_argument("--dest", type=Path, default=Path("app/examples"))
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality of the corrupted variants")
    args = parser.parse_args(argv)
    written = write_examples(args.sample, args.dest, args.quality)
    total = sum(path.stat().st_size for path in written)
    print(f"wrote {len(written)} examples ({total / 1024:.0f} KiB) to {args.dest}")


if __name__ == "__main__":
    main()
