"""Drift detection on real Imagenette embeddings: false-positive rate, power per corruption, time per test.

Reference: the held-out split carved from train (the one the DriftCallback uses). Windows are drawn from the
official val split, clean (false-positive rate) and under each ImageNet-C corruption x severity (power), plus
label shift (windows of three classes). Each corrupted split is embedded once; windows are drawn from the
cached embeddings. torchdrift's KernelMMDDriftDetector runs on the same embeddings in the same run (on
fewer windows: it is ~100x slower per test).

    python benchmarks/drift_bench.py --checkpoint outputs/imagenette/checkpoints/last.ckpt \
        --data ../shared/data/imagenette2-160            # default: ~15 min, 500 val images, severities 1/3/5
    python benchmarks/drift_bench.py ... --full          # all of val, severities 1-5, more windows

Needs the extras `corruptions` and `bench` (torchdrift).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path

import torch

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.corruptions import CORRUPTIONS
from imagenette_drift.data import ImagenetteDataModule
from imagenette_drift.drift import ChiSquaredDriftDetector, KSDriftDetector, MMDDriftDetector
from imagenette_drift.embedding import embed_folder
from imagenette_drift.io import write_text_atomic

METHODS = ("mmd", "ks", "chi2", "inputs", "torchdrift_mmd")
OURS = METHODS[:4]


def _embed_cached(model: InferenceModel, paths, cache: Path, corruption=None, severity=0):
    """(embeddings, probs, image statistics) of the images, computed once and kept in `cache`."""
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        if "stats" in data:
            return data["embeddings"], data["probs"], data["stats"]
    embeddings, probs, stats = embed_folder(model, paths, corruption, severity, batch_size=100)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"embeddings": embeddings, "probs": probs, "stats": stats}, cache)
    return embeddings, probs, stats


class _Detectors:
    """Our three tests and torchdrift's MMD, fitted on the same reference; times every call."""

    def __init__(
        self,
        ref_emb: torch.Tensor,
        ref_probs: torch.Tensor,
        ref_stats: torch.Tensor,
        alpha: float,
        n_perm: int,
    ) -> None:
        from torchdrift.detectors.mmd import KernelMMDDriftDetector

        self.alpha = alpha
        self.mmd = MMDDriftDetector(ref_emb, n_permutations=n_perm, alpha=alpha)
        self.ks = KSDriftDetector(ref_probs, alpha=alpha)
        self.chi2 = ChiSquaredDriftDetector(ref_probs, num_classes=ref_probs.shape[1], alpha=alpha)
        self.inputs = KSDriftDetector(ref_stats, alpha=alpha)
        self.torchdrift = KernelMMDDriftDetector(return_p_value=True, n_perm=n_perm)
        self.torchdrift.fit(ref_emb)
        self.times: dict[str, list[float]] = {m: [] for m in METHODS}

    def run(self, method: str, data: tuple[torch.Tensor, ...]) -> bool:
        emb, probs, stats = data
        start = time.perf_counter()
        if method == "torchdrift_mmd":
            drift = float(self.torchdrift(emb)) < self.alpha
        else:
            x = {"mmd": emb, "ks": probs, "chi2": probs, "inputs": stats}[method]
            drift = getattr(self, method).test(x).drift
        self.times[method].append(time.perf_counter() - start)
        return drift


def _rate(
    detectors: _Detectors, method: str, data: tuple[torch.Tensor, ...], windows: list[torch.Tensor]
) -> float:
    return sum(detectors.run(method, tuple(t[w] for t in data)) for w in windows) / len(windows)


def _windows(
    n: int, size: int, count: int, rng: random.Random, pool: list[int] | None = None
) -> list[torch.Tensor]:
    population = pool if pool is not None else list(range(n))
    return [torch.tensor(rng.sample(population, size)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, default=None, help="imagenette2-160 root (default: $IMAGENETTE_DATA)"
    )
    parser.add_argument("--full", action="store_true", help="all of val, severities 1-5, more windows")
    parser.add_argument("--n-val", type=int, default=500, help="val images drawn for the shifted splits")
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--window-sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--clean-windows", type=int, default=200)
    parser.add_argument("--shift-windows", type=int, default=50)
    parser.add_argument("--torchdrift-windows", type=int, default=10, help="windows per cell for torchdrift")
    parser.add_argument("--n-permutations", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("outputs/cache/drift_bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drift_bench"))
    args = parser.parse_args()
    if args.full:
        args.n_val, args.severities, args.clean_windows, args.shift_windows = 3925, [1, 2, 3, 4, 5], 500, 100
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    started = time.perf_counter()

    model = load_for_inference(args.checkpoint)
    dm = ImagenetteDataModule(
        root=str(args.data) if args.data else None, val_fraction=0.1, split_seed=0, verify=False
    )
    dm.setup("fit")
    cache = args.cache / model.sha256[:16]
    reference = _embed_cached(model, dm.splits["val"].paths, cache / "reference.pt")
    test = dm.splits["test"]
    # Clean windows (false-positive rate) come from all of val; shifted ones from a seeded subset of it.
    clean_all = _embed_cached(model, test.paths, cache / "clean-all.pt")
    picked = sorted(random.Random(1).sample(range(len(test)), min(args.n_val, len(test))))
    val_paths = [test.paths[i] for i in picked]
    labels = list(test.labels)
    print(
        f"reference {len(reference[0])}, val {len(test)}, shifted subset {len(picked)}; embedded in {time.perf_counter() - started:.0f} s"
    )

    detectors = _Detectors(*reference, args.alpha, args.n_permutations)
    results: dict = {"fpr": {}, "power": {}, "label_shift": {}}
    few = sorted(set(labels))[:3]
    pool = [i for i, y in enumerate(labels) if y in few]
    for size in args.window_sizes:
        windows = _windows(len(test), size, args.clean_windows, rng)
        results["fpr"][size] = {m: _rate(detectors, m, clean_all, windows) for m in OURS}
        results["fpr"][size]["torchdrift_mmd"] = _rate(
            detectors, "torchdrift_mmd", clean_all, windows[: args.torchdrift_windows * 5]
        )
        label_windows = _windows(len(test), size, args.shift_windows, rng, pool)
        results["label_shift"][size] = {m: _rate(detectors, m, clean_all, label_windows) for m in OURS}
    print(f"clean FPR: {results['fpr']}")

    for corruption in args.corruptions:
        for severity in args.severities:
            t0 = time.perf_counter()
            shifted = _embed_cached(
                model, val_paths, cache / f"{corruption}-{severity}-{len(picked)}.pt", corruption, severity
            )
            cell = {}
            for size in args.window_sizes:
                windows = _windows(len(picked), size, args.shift_windows, rng)
                cell[size] = {m: _rate(detectors, m, shifted, windows) for m in OURS}
                if size == max(args.window_sizes):
                    cell[size]["torchdrift_mmd"] = _rate(
                        detectors, "torchdrift_mmd", shifted, windows[: args.torchdrift_windows]
                    )
            results["power"][f"{corruption}/{severity}"] = cell
            big = cell[max(args.window_sizes)]
            print(
                f"{corruption:>18} s{severity}: power@{max(args.window_sizes)} "
                + " ".join(f"{m}={v:.2f}" for m, v in big.items())
                + f"  ({time.perf_counter() - t0:.0f} s)"
            )

    timing = {m: statistics.median(t) * 1000 for m, t in detectors.times.items() if t}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    report = {
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, torch threads={args.threads}",
        "checkpoint_sha256": model.sha256,
        "n_reference": len(reference[0]),
        "n_val_clean": len(test),
        "n_val_shifted": len(picked),
        "alpha": args.alpha,
        "n_permutations": args.n_permutations,
        "window_sizes": args.window_sizes,
        "median_ms_per_test": timing,
        "wall_s": time.perf_counter() - started,
        **results,
    }
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), _markdown(report))
    print(_markdown(report))


def _markdown(report: dict) -> str:
    size = max(report["window_sizes"])
    lines = [
        f"# Drift benchmark (commit {report['commit']})",
        "",
        f"Reference: {report['n_reference']} held-out train images. Clean windows from all {report['n_val_clean']} "
        f"official-val images, shifted windows from {report['n_val_shifted']} of them. alpha={report['alpha']}; "
        f"{report['n_permutations']} permutations; {report['machine']}.",
        "",
        "Median time per test (ms): "
        + ", ".join(f"{m} {t:.1f}" for m, t in report["median_ms_per_test"].items()),
        "",
        "## False-positive rate on clean windows",
        "",
        "| window | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for w, row in report["fpr"].items():
        lines.append(f"| {w} | " + " | ".join(f"{row.get(m, float('nan')):.3f}" for m in METHODS) + " |")
    lines += [
        "",
        "## Label shift (windows of 3 classes)",
        "",
        "| window | mmd | ks | chi2 |",
        "|---|---|---|---|",
    ]
    for w, row in report["label_shift"].items():
        lines.append(f"| {w} | " + " | ".join(f"{row[m]:.2f}" for m in METHODS[:3]) + " |")
    lines += [
        "",
        f"## Power at window {size}",
        "",
        "| corruption/severity | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for cell, by_size in report["power"].items():
        row = by_size[size] if size in by_size else by_size[str(size)]
        lines.append(f"| {cell} | " + " | ".join(f"{row.get(m, float('nan')):.2f}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
