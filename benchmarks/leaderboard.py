"""Run the leaderboard protocol and record it: fit on all of train, test the final weights on official val.

    python benchmarks/leaderboard.py --name r18-5ep --seed 0 -- --trainer.max_epochs=5 [more fit flags]

Each run executes, in a fresh folder under outputs/leaderboard/<name>-s<seed>:
`imagenette fit --config configs/imagenette.yaml --config configs/presets/leaderboard.yaml <flags>` then
`imagenette test` on `last.ckpt` (the final epoch: no selection on val). Appends the result to
benchmarks/results/leaderboard.json and rewrites leaderboard.md (mean and spread per name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from imagenette_drift.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The fastai leaderboard's best entries (xresnet/xse_resnext, larger than ResNet-18), top-1 on val.
LEADERBOARD = {
    "5 epochs, 128 px": 85.77,
    "20 epochs, 128 px": 91.57,
    "5 epochs, 192 px": 86.76,
    "20 epochs, 192 px": 92.50,
}


def _run(args: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--name", required=True, help="a name for this recipe (rows with the same name are pooled)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", type=Path, default=None, help="imagenette2-160 root (default: $IMAGENETTE_DATA)"
    )
    parser.add_argument("flags", nargs="*", help="extra `imagenette fit` flags, after --")
    args = parser.parse_args()

    run_dir = REPO / "outputs" / "leaderboard" / f"{args.name}-s{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("imagenette"))
    common = [
        "--config",
        str(REPO / "configs" / "imagenette.yaml"),
        "--config",
        str(REPO / "configs" / "presets" / "leaderboard.yaml"),
    ]
    if args.data:
        common.append(f"--data.root={args.data}")
    fit_s = _run(
        [
            exe,
            "fit",
            *common,
            f"--seed_everything={args.seed}",
            "--trainer.enable_progress_bar=false",
            *args.flags,
        ],
        run_dir,
        run_dir / "fit.log",
    )
    ckpt = run_dir / "outputs" / "imagenette" / "checkpoints" / "last.ckpt"
    tta = [f for f in args.flags if f.startswith("--model.tta_flip")]
    test_s = _run(
        [exe, "test", *common, f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false", *tta],
        run_dir,
        run_dir / "test.log",
    )
    epochs = torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"][
        "completed"
    ]
    test_metrics = json.loads((run_dir / "outputs" / "imagenette" / "test_metrics.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    row = {
        "name": args.name,
        "seed": args.seed,
        "epochs": epochs,
        "flags": args.flags,
        "test_top1": test_metrics["test/acc"],
        "test_top5": test_metrics["test/acc_top5"],
        "test_f1": test_metrics["test/f1"],
        "fit_wall_s": round(fit_s, 1),
        "test_wall_s": round(test_s, 1),
        "commit": commit,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
    }
    path = RESULTS / "leaderboard.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append(row)
    write_text_atomic(path, json.dumps(rows, indent=2) + "\n")
    write_text_atomic(RESULTS / "leaderboard.md", _markdown(rows))
    print(json.dumps(row, indent=2))


def _markdown(rows: list[dict]) -> str:
    lines = [
        "# Imagenette-160 leaderboard protocol: ResNet-18 from scratch",
        "",
        "Fit on all of `train`, test the final epoch's weights on the official `val` (3,925 images).",
        "",
        "| recipe | epochs | seeds | top-1 (mean ± sd) | per seed | fit wall (s) | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        accs = [100 * r["test_top1"] for r in group]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_seed = ", ".join(f"s{r['seed']}: {100 * r['test_top1']:.2f}" for r in group)
        walls = ", ".join(f"{r['fit_wall_s']:.0f}" for r in group)
        lines.append(
            f"| {name} | {group[0]['epochs']} | {len(group)} | {statistics.mean(accs):.2f} ± {spread:.2f} | {per_seed} | {walls} | {group[-1]['commit']} |"
        )
    lines += [
        "",
        "Leaderboard best entries (larger xresnet models): "
        + ", ".join(f"{k}: {v}%" for k, v in LEADERBOARD.items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
