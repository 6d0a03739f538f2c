"""Label-free accuracy estimation on shifted windows: true against estimated top-1, every method side by side.

Protocol: the official val split (the test set) clean, under each ImageNet-C corruption at each severity, under
shifts of our own that are not ImageNet-C (rotation, zoom, colour temperature, low resolution, heavy JPEG; see
`_cells.OWN_SHIFTS`), and label-shifted (class shares drawn from a Dirichlet(0.5) per window). Windows of each
size are drawn at random from each cell; per window the absolute error |estimate - true accuracy| in points.

Methods:
- the card's (`EstimationReference`, fitted on the clean held-out split as at the end of `imagenette fit`):
  ATC-MC, ATC-NE, AC, DoC, COT, COTT, nuclear (see `imagenette_drift.estimation`);
- regressions fitted on synthetic meta-sets (windows of corrupted held-out images, never val images): accuracy
  on the Fréchet distance of the window's embeddings to the held-out ones (``fd_reg``, Deng & Zheng, CVPR
  2021), on the nuclear score (``nuclear_reg``, Deng et al., ICML 2023), and on several statistics at once
  (``meta_reg``: ATC-MC, AC, COT, nuclear, Fréchet distance). No regression is fitted on the family it is
  scored on: for a noise cell it is fitted on blur, weather and digital only (leave-one-family-out); clean,
  label-shifted and own-shift windows use a fit on all four families.

Coverage: the share of windows whose true accuracy lies in the primary method's 90% interval (z = 1.645).

Every cell's images are built once and cached (`_cells.py`: the corruptions dominate the cost, glass blur about
0.25 s an image), and the model runs once per cell (outputs cached), so all methods read one set of outputs.
  python benchmarks/_cells.py --data.root DATA --out CELLS          # one per core; they share the work
  python benchmarks/accuracy_estimation.py --ckpt_path CKPT --data.root DATA --cells CELLS
Small run: --corruptions fog gaussian_noise --severities 3 --own-shifts rotate-20 --windows 50 --limit 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cells import FAMILIES, FAMILY_OF, OWN_SHIFTS, build_images, cell_outputs, corruption_cells
from _outputs import heldout_and_test, subset

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.corruptions import CORRUPTIONS
from imagenette_drift.estimation import EstimationReference, apply_temperature, frechet_distance
from imagenette_drift.estimation.reference import METHODS
from imagenette_drift.estimation.transport import transport_cost
from imagenette_drift.familiarity.reference import FamiliarityReference, knn_distance

# Transport read with the card's familiarity flags (k-NN distance to the held-out bank, as the server logs them).
FAMILIAR = ("cot_f",)
REGRESSIONS = ("fd_reg", "nuclear_reg", "meta_reg")
ALL_METHODS = (*METHODS, *FAMILIAR, *REGRESSIONS)
REGRESSION_INPUTS = {
    "fd_reg": ["fd"],
    "nuclear_reg": ["nuclear"],
    "meta_reg": ["atc_mc", "ac", "cot", "nuclear", "fd"],
}
Z90 = 1.645


def familiar_transport_accuracy(
    probs: torch.Tensor, class_shares: torch.Tensor, unfamiliar: torch.Tensor, atc_threshold: float
) -> float:
    """An experiment (``cot_f``): familiar rows judged by ATC (their confidence trusted), unfamiliar rows by COT
    onto the held-out class shares. A fraction in [0, 1]. The hope: a label shift keeps images familiar (ATC
    holds) while a corruption makes them unfamiliar (COT holds). It fails when collapsed images stay familiar.

    Args:
        probs: (N, C) temperature-scaled softmax rows.
        class_shares: (C,) held-out class shares.
        unfamiliar: (N,) bool, beyond the card's familiarity threshold (`imagenette_drift.familiarity`).
        atc_threshold: ATC-MC's max-confidence threshold.
    """
    probs, shares = probs.float(), class_shares.float()
    unfamiliar = torch.as_tensor(unfamiliar, dtype=torch.bool).flatten()
    if unfamiliar.shape != (len(probs),):
        raise ValueError(
            f"unfamiliar must be ({len(probs)},) bools, one per row, got {tuple(unfamiliar.shape)}."
        )
    familiar = ~unfamiliar
    right = float((probs[familiar].amax(dim=1) > atc_threshold).float().sum())
    n_unfamiliar = int(unfamiliar.sum())
    if n_unfamiliar:
        right += n_unfamiliar * (1.0 - transport_cost(probs[unfamiliar], shares))
    return right / len(probs)


class Features:
    """Per-window statistics: the card's estimates, the familiarity-read transport estimates and the Fréchet
    distance of the window's embeddings to the held-out ones (for the regressions)."""

    def __init__(
        self, reference: EstimationReference, familiarity: FamiliarityReference, heldout: dict, dims: int = 32
    ) -> None:
        self.reference, self.familiarity = reference, familiarity
        x = heldout["embeddings"].float()
        self.center = x.mean(0)
        # A PCA projection keeps the Fréchet distance's small-window bias low (512 dimensions from 100 images).
        _, _, v = torch.pca_lowrank(x - self.center, q=min(dims, len(x) - 1), center=False)
        self.projection = v
        z = (x - self.center) @ v
        self.mean, self.cov = z.mean(0), torch.cov(z.T)
        # Offsets of the familiarity-read methods to the held-out accuracy; held-out images are in the bank, so
        # their flags leave themselves out, as the threshold was set.
        bank = familiarity.bank.float()
        unfamiliar = knn_distance(x, bank, familiarity.k, exclude_self=True) > familiarity.knn_threshold
        raw = self._familiar(heldout["logits"].softmax(1), unfamiliar)
        self.offsets = {m: reference.heldout_accuracy - v for m, v in raw.items()}

    def _familiar(self, probs: torch.Tensor, unfamiliar: torch.Tensor) -> dict[str, float]:
        r = self.reference
        scaled = apply_temperature(probs, r.temperature)
        shares = torch.tensor(r.class_shares)
        return {"cot_f": familiar_transport_accuracy(scaled, shares, unfamiliar, r.atc_threshold_mc)}

    def __call__(self, probs: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
        estimates = self.reference.estimate(probs, z=Z90)
        z = (embeddings.float() - self.center) @ self.projection
        unfamiliar = self.familiarity.score(embeddings.float())["unfamiliar"]
        familiar = {m: v + self.offsets[m] for m, v in self._familiar(probs, unfamiliar).items()}
        return (
            {m: e.estimate for m, e in estimates.items()}
            | familiar
            | {
                "unfamiliar": float(unfamiliar.float().mean()),
                "fd": frechet_distance(z, self.mean, self.cov),
                "intervals": {m: (e.lower, e.upper) for m, e in estimates.items()},
            }
        )


def _interval_terms(
    reference: EstimationReference, row: dict, method: str | None = None
) -> tuple[float, float, float]:
    """(|error|, the interval's variance without the bias term, the estimated drop) of `method` (default: the
    primary) in a row."""
    p, a = min(max(row[method or reference.primary], 0.0), 1.0), reference.heldout_accuracy
    variance = p * (1 - p) / row["n"] + a * (1 - a) / reference.n_heldout
    return abs(p - row["true"]), variance, max(0.0, a - p)


def fit_bias_fraction(reference: EstimationReference, rows: list[dict], coverage: float = 0.9) -> float:
    """The smallest `EstimationReference.bias_fraction` whose 90% interval holds the truth in `coverage` of the
    meta-set windows (the bias allowance is that fraction of the estimated drop, as a standard deviation).

    Fitted on COT's readings: the allowance is for the bias under covariate shift, where `cot_ls` is COT; on the
    meta-sets (corrupted held-out images, the rows `cot_ls` compares against) its label-shift test would be
    judged on the rows it was fitted on.
    """
    needed = []
    for row in rows:
        error, variance, drop = _interval_terms(reference, row, "cot" if reference.has_transport else None)
        excess = (error / Z90) ** 2 - variance
        needed.append(0.0 if excess <= 0 else (math.sqrt(excess) / drop if drop > 0 else math.inf))
    return float(np.quantile(needed, coverage))


def covered(reference: EstimationReference, row: dict, bias_fraction: float) -> bool:
    error, variance, drop = _interval_terms(reference, row)
    return error <= Z90 * math.sqrt(variance + (bias_fraction * drop) ** 2)


def fit_regressions(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Least-squares coefficients (intercept first) of accuracy on each regression's inputs."""
    y = torch.tensor([r["true"] for r in rows], dtype=torch.float64)
    out = {}
    for name, inputs in REGRESSION_INPUTS.items():
        x = torch.tensor([[1.0, *(r[i] for i in inputs)] for r in rows], dtype=torch.float64)
        out[name] = torch.linalg.lstsq(x, y[:, None]).solution.squeeze(1)
    return out


def predict(coefficients: dict[str, torch.Tensor], row: dict) -> dict[str, float]:
    return {
        name: float(
            min(1.0, max(0.0, c[0] + sum(c[k + 1] * row[i] for k, i in enumerate(REGRESSION_INPUTS[name]))))
        )
        for name, c in coefficients.items()
    }


def random_windows(n_total: int, window: int, n_windows: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_total, generator=g)[:window] for _ in range(n_windows)]


def label_shift_windows(labels: torch.Tensor, window: int, n_windows: int, seed: int) -> list[torch.Tensor]:
    """Windows whose class shares follow Dirichlet(0.5) (drawn with replacement within each class)."""
    g = torch.Generator().manual_seed(seed)
    classes = int(labels.max()) + 1
    by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(classes)]
    out = []
    for _ in range(n_windows):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        shares = torch.distributions.Dirichlet(torch.full((classes,), 0.5)).sample()
        counts = torch.multinomial(shares, window, replacement=True, generator=g).bincount(minlength=classes)
        out.append(
            torch.cat(
                [
                    m[torch.randint(0, len(m), (int(k),), generator=g)]
                    for m, k in zip(by_class, counts, strict=True)
                    if k
                ]
            )
        )
    return out


def score_windows(
    features: Features, outputs: dict, windows: list[torch.Tensor], fits: dict, bias_fraction: float
) -> list[dict]:
    """Each window's true accuracy, every method's estimate and whether the primary's 90% interval holds it
    (with the bias allowance fitted on the meta-sets of the other families)."""
    probs = outputs["logits"].softmax(1)
    correct = probs.argmax(1) == outputs["labels"]
    rows = []
    for idx in windows:
        row = features(probs[idx], outputs["embeddings"][idx]) | {"true": float(correct[idx].float().mean())}
        row |= predict(fits, row) | {"n": len(idx)}
        row.pop("intervals")
        row["covered"] = covered(features.reference, row, bias_fraction)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    methods = [m for m in ALL_METHODS if m in rows[0]]  # cot_ls only on cards that can compute it
    out = {m: float(np.mean([100 * abs(r[m] - r["true"]) for r in rows])) for m in methods}
    out["unfamiliar"] = float(np.mean([r["unfamiliar"] for r in rows]))
    out["bias"] = {m: float(np.mean([100 * (r[m] - r["true"]) for r in rows])) for m in methods}
    return out | {
        "true": float(np.mean([r["true"] for r in rows])),
        "coverage": float(np.mean([r["covered"] for r in rows])),
    }


def load_outputs(
    model, tag: str, cells: Path, split: str, cell: str, full, limit: int | None, bf16: bool
) -> dict:
    """A cell's (logits, embeddings, labels), from the cache or by building the images and running the model."""
    cache = cells / "outputs" / tag / split / f"{cell}.pt"
    images = subset(full, limit)
    if cache.exists():
        return torch.load(cache)
    path = cells / split / f"{cell}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    build_images(images, cell, model.card.image_size, path)
    array = np.load(path, mmap_mode="r")
    keep = np.arange(len(images))
    if len(array) != len(images):  # built for a larger seeded subset (the same order): keep our images
        wanted = set(images.paths)
        keep = np.array([i for i, p in enumerate(subset(full, len(array)).paths) if p in wanted])
    logits, embeddings = cell_outputs(model, np.ascontiguousarray(array[keep]), bf16=bf16)
    out = {"logits": logits, "embeddings": embeddings, "labels": torch.tensor(images.labels)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", dest="checkpoint", type=Path, required=True)
    parser.add_argument("--data.root", dest="data", type=Path, required=True, help="imagenette2-160 root")
    parser.add_argument("--cells", type=Path, default=None, help="cache of cell images and outputs")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=CORRUPTIONS)
    parser.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--own-shifts", nargs="*", default=list(OWN_SHIFTS), choices=list(OWN_SHIFTS))
    parser.add_argument("--windows", nargs="+", type=int, default=[100, 200])
    parser.add_argument("--n-windows", type=int, default=10, help="random windows per cell and size")
    parser.add_argument("--limit", type=int, default=200, help="val images per cell (seeded subset)")
    parser.add_argument("--meta-severities", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--heldout-limit", type=int, default=100, help="held-out images per meta-set cell")
    parser.add_argument("--meta-window", type=int, default=80, help="images per meta-set window")
    parser.add_argument("--meta-windows", type=int, default=5, help="meta-set windows per held-out cell")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="float32 instead of bf16 autocast"
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/accuracy_estimation"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_for_inference(args.checkpoint)
    tag = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:12]
    cells_dir = args.cells or args.output.parent / f"{args.output.name}_cells"
    heldout, test = heldout_and_test(args.data)

    def get(split: str, cell: str, full, limit: int | None) -> dict:
        return load_outputs(model, tag, cells_dir, split, cell, full, limit, args.bf16)

    held = get("heldout", "clean", heldout, None)
    reference = EstimationReference.fit(held["logits"], held["labels"])
    familiarity = FamiliarityReference.from_state_dict(model.card.familiarity)
    features = Features(reference, familiarity, held)
    names = corruption_cells(args.corruptions, args.severities)

    def rows_of(out: dict, windows: list[torch.Tensor]) -> list[dict]:
        probs = out["logits"].softmax(1)
        correct = probs.argmax(1) == out["labels"]
        return [
            {k: v for k, v in features(probs[i], out["embeddings"][i]).items() if k != "intervals"}
            | {"true": float(correct[i].float().mean()), "n": len(i)}
            for i in windows
        ]

    meta = {family: [] for family in FAMILIES}
    for name in corruption_cells(args.corruptions, args.meta_severities):
        out = get("meta", name, heldout, args.heldout_limit)
        windows = random_windows(len(out["labels"]), args.meta_window, args.meta_windows, seed=len(meta))
        meta[FAMILY_OF[name.rsplit("-", 1)[0]]] += rows_of(out, windows)
    clean_meta = rows_of(
        held, random_windows(len(held["labels"]), args.meta_window, 4 * args.meta_windows, seed=1)
    )
    fits = {
        f: fit_regressions(clean_meta + [r for g, rows in meta.items() if g != f for r in rows])
        for f in FAMILIES
    }
    fits["all"] = fit_regressions(clean_meta + [r for rows in meta.values() for r in rows])
    # The interval's bias allowance, fitted like the regressions: on the meta-sets of the other families.
    bias = {
        f: fit_bias_fraction(reference, clean_meta + [r for g, rows in meta.items() if g != f for r in rows])
        for f in FAMILIES
    }
    bias["all"] = fit_bias_fraction(reference, clean_meta + [r for rows in meta.values() for r in rows])

    cells: dict[str, dict] = {}
    for name in ["clean", *names, *args.own_shifts]:
        out = get("test", name, test, args.limit)
        n = len(out["labels"])
        family = FAMILY_OF.get(name.rsplit("-", 1)[0], "all")
        accuracy = float((out["logits"].argmax(1) == out["labels"]).float().mean())
        cells[name] = {"accuracy": accuracy, "n": n, "windows": {}}
        for w in args.windows:
            windows = random_windows(n, min(w, n), args.n_windows if w < n else 1, seed=w)
            rows = score_windows(features, out, windows, fits[family], bias[family])
            cells[name]["windows"][w] = summarise(rows)
        print(f"{name:<22} acc={accuracy:.3f}  {time.perf_counter() - start:.0f} s", flush=True)
    clean = get("test", "clean", test, args.limit)
    label_shift = {
        w: summarise(
            score_windows(
                features,
                clean,
                label_shift_windows(clean["labels"], w, args.n_windows, w),
                fits["all"],
                bias["all"],
            )
        )
        for w in args.windows
    }
    results = {
        "checkpoint": str(args.checkpoint),
        "heldout": {
            "n": reference.n_heldout,
            "accuracy": reference.heldout_accuracy,
            "temperature": reference.temperature,
        },
        "primary": reference.primary,
        "bias_fraction": bias,
        "images_per_cell": args.limit,
        "meta_sets": {
            "images_per_cell": args.heldout_limit,
            "window": args.meta_window,
            "windows_per_cell": args.meta_windows,
        },
        "n_windows": args.n_windows,
        "cells": cells,
        "label_shift": label_shift,
        "seconds": time.perf_counter() - start,
    }
    results["table"] = table(results, args.windows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(results["table"] + "\n")
    print(results["table"])


def _groups(cells: dict) -> dict[str, list[str]]:
    corrupted = [k for k in cells if k.rsplit("-", 1)[0] in FAMILY_OF]
    groups = {"all corruptions (LOFO)": corrupted}
    groups |= {f: [k for k in corrupted if FAMILY_OF[k.rsplit("-", 1)[0]] == f] for f in FAMILIES}
    return groups | {
        "own shifts": [k for k in cells if k in OWN_SHIFTS],
        "clean": ["clean"] if "clean" in cells else [],
    }


def table(results: dict, windows: list[int]) -> str:
    """Markdown: MAE in points per method and group of cells; coverage of the primary's 90% interval."""
    cells = results["cells"]
    lines = [
        f"Held-out n={results['heldout']['n']} (accuracy {results['heldout']['accuracy']:.3f}, "
        f"T={results['heldout']['temperature']:.3f}); up to {results['images_per_cell']} val images per cell; "
        f"{results['n_windows']} windows per cell and size (one window of the whole cell when the size is not "
        f"smaller). MAE in accuracy points; coverage: share of windows inside the 90% interval of "
        f"`{results['primary']}`. Regressions (`*_reg`) are fitted on held-out meta-sets, leave-one-family-out.",
        "Bias allowance of the interval (fraction of the estimated drop), fitted on the meta-sets without the "
        "scored family: " + ", ".join(f"{k} {v:.2f}" for k, v in results["bias_fraction"].items()) + ".",
        "",
        "| data | window | cells | true acc | " + " | ".join(ALL_METHODS) + " | coverage |",
        "| --- | ---: | ---: | ---: |" + " ---: |" * (len(ALL_METHODS) + 1),
    ]
    for w in windows:
        rows = [(g, [cells[n]["windows"][w] for n in names]) for g, names in _groups(cells).items() if names]
        rows.append(("label shift", [results["label_shift"][w]]))
        for group, stats in rows:
            values = [f"{np.mean([s[m] for s in stats]):.1f}" if m in stats[0] else "-" for m in ALL_METHODS]
            true = np.mean([s["true"] for s in stats])
            coverage = np.mean([s["coverage"] for s in stats])
            n = len(stats) if group != "label shift" else "-"
            lines.append(
                f"| {group} | {w} | {n} | {true:.1%} | " + " | ".join(values) + f" | {coverage:.0%} |"
            )
    lines += [
        "",
        "True top-1 per corruption and severity:",
        "",
        "| corruption | 1 | 2 | 3 | 4 | 5 |",
        "| --- |" + " ---: |" * 5,
    ]
    for corruption in CORRUPTIONS:
        accs = [cells.get(f"{corruption}-{s}", {}).get("accuracy") for s in range(1, 6)]
        if any(a is not None for a in accs):
            lines.append(
                f"| {corruption} | " + " | ".join("-" if a is None else f"{a:.1%}" for a in accs) + " |"
            )
    own = [k for k in cells if k in OWN_SHIFTS]
    if own:
        lines += ["", "| own shift | " + " | ".join(own) + " |", "| --- |" + " ---: |" * len(own)]
        lines.append("| true top-1 | " + " | ".join(f"{cells[k]['accuracy']:.1%}" for k in own) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
