"""Open-set familiarity: AUROC and FPR at 95% TPR of max-softmax, energy and k-NN distance, in one run.

Protocol: train with two classes left out (`imagenette fit ... --data.exclude_classes=[tench,
parachute]`); the familiarity reference (held-out bank, head) comes from that checkpoint's card. Positives
(familiar) are the official val images of the eight trained classes; negatives are (a) the val images of the two
left-out classes and (b) severity-5 corruptions of the in-class val images. Scores, higher = less familiar:
MSP baseline (Hendrycks & Gimpel, ICLR 2017) as 1 - max softmax; energy (Liu et al., NeurIPS 2020); k-NN
distance on L2-normalised embeddings (Sun et al., ICML 2022). AUROC and ROC come from torchmetrics.
FPR95: the fraction of negatives scored below the threshold that keeps 95% of positives.
Target: the best score's FPR95 at least 15 points below MSP's on the left-out classes.

  python benchmarks/open_set.py --ckpt_path CKPT --data.root DATA --excluded tench parachute [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torchmetrics.functional.classification import binary_auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _outputs import model_outputs, subset

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.classes import IMAGENETTE_CLASSES
from imagenette_drift.data.layout import Split, class_indices, scan_split
from imagenette_drift.familiarity.reference import FamiliarityReference, energy_score


def fpr_at_95_tpr(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Fraction of negatives (unfamiliar) scored at or below the 95th percentile of positives (familiar)."""
    threshold = torch.quantile(positive.double(), 0.95)
    return float((negative.double() <= threshold).float().mean())


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """AUROC of telling negatives (label 1, higher score) from positives."""
    scores = torch.cat([positive, negative]).double()
    # torchmetrics squashes scores outside [0, 1] with a sigmoid (ties for large scores): rescale, monotone.
    scores = (scores - scores.min()) / (scores.max() - scores.min()).clamp_min(1e-12)
    target = torch.cat([torch.zeros(len(positive)), torch.ones(len(negative))]).long()
    return float(binary_auroc(scores, target))


def scores(reference: FamiliarityReference, embeddings: torch.Tensor, logits: torch.Tensor) -> dict:
    return {
        "msp": 1.0 - logits.softmax(1).amax(1),
        "energy": energy_score(logits),
        "knn": reference.score(embeddings)["knn_distance"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt_path", dest="checkpoint", type=Path, required=True, help="trained with --data.exclude_classes"
    )
    parser.add_argument("--data.root", dest="data", type=Path, required=True)
    parser.add_argument("--excluded", nargs="+", required=True, help="the classes left out in training")
    parser.add_argument(
        "--corruptions", nargs="*", default=["gaussian_noise", "fog", "contrast", "motion_blur"]
    )
    parser.add_argument("--limit", type=int, default=None, help="images per group (seeded subset)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/open_set"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_for_inference(args.checkpoint, map_location=args.device)
    if model.card.familiarity is None:
        raise SystemExit(
            f"{args.checkpoint} has no familiarity bank in its card; train it with the DriftCallback."
        )
    reference = FamiliarityReference.from_state_dict(model.card.familiarity)
    excluded = class_indices(args.excluded, IMAGENETTE_CLASSES)
    test = scan_split(args.data, "val")
    inside = subset(
        Split(
            *zip(
                *[(p, y) for p, y in zip(test.paths, test.labels, strict=True) if y not in excluded],
                strict=True,
            )
        ),
        args.limit,
    )
    outside = subset(
        Split(
            *zip(
                *[(p, y) for p, y in zip(test.paths, test.labels, strict=True) if y in excluded], strict=True
            )
        ),
        args.limit,
    )

    def score(split: Split, corruption: str | None = None) -> dict:
        emb, logits = model_outputs(
            model, split.paths, corruption, 5, args.batch_size, args.workers, args.device
        )
        return scores(reference, emb, logits)

    positive = score(inside)
    groups = {"left-out classes": score(outside)}
    for corruption in args.corruptions:
        groups[f"{corruption}-5"] = score(inside, corruption)
    results = {
        "checkpoint": str(args.checkpoint),
        "excluded": args.excluded,
        "n_in": len(inside),
        "groups": {},
    }
    lines = [
        f"{len(inside)} in-class val images (positives) of the 8 trained classes; k={reference.k}, "
        f"bank={len(reference.bank)}. AUROC / FPR95 (lower FPR95 is better).",
        "",
        "| negatives | n | MSP | energy | k-NN |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, negative in groups.items():
        row = {
            method: {
                "auroc": auroc(positive[method], negative[method]),
                "fpr95": fpr_at_95_tpr(positive[method], negative[method]),
            }
            for method in ("msp", "energy", "knn")
        }
        results["groups"][name] = row | {"n": len(negative["msp"])}
        cells = " | ".join(f"{row[m]['auroc']:.3f} / {row[m]['fpr95']:.1%}" for m in ("msp", "energy", "knn"))
        lines.append(f"| {name} | {len(negative['msp'])} | {cells} |")
    results["table"] = "\n".join(lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(results["table"] + "\n")
    print(results["table"])


if __name__ == "__main__":
    main()
