"""Label-free accuracy estimation on shifted windows: true against estimated top-1 for ATC-MC, ATC-NE, AC, DoC.

Protocol (issue #15): the official val split (the test set) clean, under each ImageNet-C corruption at each
severity, and label-shifted (class shares drawn from a Dirichlet(0.5) per window); windows of 100, 200 and
500 images drawn at random from each cell; per window the absolute error |estimate - true accuracy| in points.
The estimators are fitted on the held-out split carved from train (temperature scaling, ATC thresholds), as at
the end of `imagenette fit`. Also reports BBSE's error on the label-shifted windows (max over classes of
|estimated - true share|). Target: ATC's MAE at window 500 <= 2.5 points over all corruption x severity cells,
and below AC and DoC.

Full run (GPU machine, all 3925 val images per cell, 95 cells): about 375k corrupted images; the corruptions
dominate (about 25 ms per image per core on average, glass_blur 230 ms): use --workers.
  python benchmarks/accuracy_estimation.py --ckpt_path CKPT --data.root DATA --device cuda --workers 16
Small run here: --limit 200 --severities 3 --corruptions fog gaussian_noise contrast --windows 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _outputs import heldout_and_test, model_outputs, subset

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.classes import IMAGENETTE_CLASSES
from imagenette_drift.corruptions import CORRUPTIONS
from imagenette_drift.data.layout import class_indices, exclude_classes
from imagenette_drift.drift.estimation import METHODS, EstimationReference
from imagenette_drift.drift.explain import bbse_shares

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
FAMILY_OF = {c: f for f, names in FAMILIES.items() for c in names}


def window_errors(
    reference: EstimationReference,
    probs: torch.Tensor,
    correct: torch.Tensor,
    window: int,
    n_windows: int,
    seed: int,
) -> list[dict]:
    """Random windows (without replacement within a window) of one cell: true accuracy and each estimate."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_windows):
        idx = torch.randperm(len(probs), generator=g)[:window]
        true = float(correct[idx].float().mean())
        estimates = reference.estimate(probs[idx])
        rows.append({"true": true} | {m: estimates[m].estimate for m in METHODS} | {"n": len(idx)})
    return rows


def label_shift_windows(
    reference: EstimationReference,
    probs: torch.Tensor,
    labels: torch.Tensor,
    confusion: torch.Tensor,
    window: int,
    n_windows: int,
    seed: int,
) -> list[dict]:
    """Windows whose class shares follow Dirichlet(0.5): accuracy estimates and BBSE's share error."""
    g = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(probs.shape[1])]
    dirichlet = torch.distributions.Dirichlet(torch.full((probs.shape[1],), 0.5))
    rows = []
    for _ in range(n_windows):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        shares = dirichlet.sample()
        counts = torch.distributions.Multinomial(window, shares).sample().long()
        idx = torch.cat(
            [
                members[torch.randint(0, len(members), (int(k),), generator=g)]
                for members, k in zip(by_class, counts, strict=True)
                if k > 0
            ]
        )
        correct = probs[idx].argmax(1) == labels[idx]
        estimates = reference.estimate(probs[idx])
        predicted = torch.bincount(probs[idx].argmax(1), minlength=probs.shape[1]).float() / len(idx)
        true_shares = counts.float() / counts.sum()
        bbse = bbse_shares(predicted, confusion)
        rows.append(
            {"true": float(correct.float().mean())}
            | {m: estimates[m].estimate for m in METHODS}
            | {"n": len(idx), "bbse_max_error": float((bbse - true_shares).abs().max())}
        )
    return rows


def summarise(rows: list[dict]) -> dict:
    """MAE and max absolute error in points per method."""
    out = {}
    for m in METHODS:
        errors = torch.tensor([100 * abs(r[m] - r["true"]) for r in rows])
        out[m] = {"mae": float(errors.mean()), "max": float(errors.max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", dest="checkpoint", type=Path, required=True)
    parser.add_argument(
        "--data.root",
        dest="data",
        type=Path,
        required=True,
        help="the imagenette2-160 root (train/ and val/)",
    )
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=CORRUPTIONS)
    parser.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--windows", nargs="+", type=int, default=[100, 200, 500])
    parser.add_argument("--n-windows", type=int, default=20, help="random windows per cell and size")
    parser.add_argument("--limit", type=int, default=None, help="val images per cell (seeded subset)")
    parser.add_argument("--heldout-limit", type=int, default=None, help="held-out images used to fit")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as the checkpoint was trained")
    parser.add_argument("--split-seed", type=int, default=0, help="as the checkpoint was trained")
    parser.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        help="classes the checkpoint was trained without (dropped here too)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (corruptions run there)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as the server's bf16 runtime")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/accuracy_estimation"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_for_inference(args.checkpoint, map_location=args.device)
    heldout, test = heldout_and_test(args.data, args.val_fraction, args.split_seed)
    if args.exclude:
        left_out = class_indices(args.exclude, IMAGENETTE_CLASSES)
        heldout, test = exclude_classes(heldout, left_out), exclude_classes(test, left_out)
    heldout, test = subset(heldout, args.heldout_limit), subset(test, args.limit)
    run = lambda split, c=None, s=3: model_outputs(  # noqa: E731
        model, split.paths, c, s, args.batch_size, args.workers, args.device, args.bf16
    )[1]
    heldout_logits = run(heldout)
    heldout_labels = torch.tensor(heldout.labels)
    reference = EstimationReference.fit(heldout_logits, heldout_labels)
    predicted = heldout_logits.argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.int64).index_put_(
        (predicted, heldout_labels), torch.ones(len(predicted), dtype=torch.int64), accumulate=True
    )
    labels = torch.tensor(test.labels)
    cells: dict[str, dict] = {}

    def add_cell(name: str, logits: torch.Tensor) -> None:
        probs = logits.softmax(1)
        correct = probs.argmax(1) == labels
        cells[name] = {"accuracy": float(correct.float().mean()), "windows": {}}
        for w in args.windows:
            rows = window_errors(reference, probs, correct, min(w, len(probs)), args.n_windows, seed=w)
            cells[name]["windows"][w] = summarise(rows)
        print(f"{name:<22} acc={cells[name]['accuracy']:.3f}", flush=True)

    clean_logits = run(test)
    add_cell("clean", clean_logits)
    shifted = {}
    for w in args.windows:
        rows = label_shift_windows(
            reference, clean_logits.softmax(1), labels, confusion, w, args.n_windows, seed=w
        )
        shifted[w] = summarise(rows) | {
            "bbse_mean_max_error": sum(r["bbse_max_error"] for r in rows) / len(rows),
            "bbse_worst": max(r["bbse_max_error"] for r in rows),
        }
    for corruption in args.corruptions:
        for severity in args.severities:
            add_cell(f"{corruption}-{severity}", run(test, corruption, severity))
    results = {
        "checkpoint": str(args.checkpoint),
        "heldout": {
            "n": len(heldout),
            "accuracy": reference.heldout_accuracy,
            "temperature": reference.temperature,
        },
        "images_per_cell": len(test),
        "n_windows": args.n_windows,
        "cells": cells,
        "label_shift": shifted,
    }
    results["table"] = table(results, args.windows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(results["table"] + "\n")
    print(results["table"])


def table(results: dict, windows: list[int]) -> str:
    """Markdown: MAE (max) in points per method, over all corruption cells, per family, clean and label shift."""
    corrupted = {k: v for k, v in results["cells"].items() if k != "clean"}
    groups = {"all corruptions": list(corrupted)} | {
        family: [k for k in corrupted if FAMILY_OF[k.rsplit("-", 1)[0]] == family] for family in FAMILIES
    }
    lines = [
        f"Held-out n={results['heldout']['n']} (accuracy {results['heldout']['accuracy']:.3f}, "
        f"T={results['heldout']['temperature']:.3f}); {results['images_per_cell']} val images per cell; "
        f"{results['n_windows']} windows per cell and size. MAE (max) in accuracy points.",
        "",
        "| data | window | cells | " + " | ".join(METHODS) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(METHODS),
    ]
    for w in windows:
        for group, names in [*groups.items(), ("clean", ["clean"])]:
            if not names:
                continue
            cells = [results["cells"][n]["windows"][w] for n in names]
            values = []
            for m in METHODS:
                mae = sum(c[m]["mae"] for c in cells) / len(cells)
                worst = max(c[m]["max"] for c in cells)
                values.append(f"{mae:.2f} ({worst:.1f})")
            lines.append(f"| {group} | {w} | {len(names)} | " + " | ".join(values) + " |")
        shift = results["label_shift"][w]
        values = [f"{shift[m]['mae']:.2f} ({shift[m]['max']:.1f})" for m in METHODS]
        lines.append(f"| label shift | {w} | - | " + " | ".join(values) + " |")
    lines += ["", "| window | BBSE mean of max share error | worst |", "| ---: | ---: | ---: |"]
    for w in windows:
        shift = results["label_shift"][w]
        lines.append(f"| {w} | {shift['bbse_mean_max_error']:.3f} | {shift['bbse_worst']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
