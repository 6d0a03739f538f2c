"""Recipe sweep under the leaderboard protocol on one GPU: several fits share the card, each writes its row.

    python benchmarks/gpu_sweep.py --data DIR --results OUT [--parallel 3] [--deadline-s 420]

First the official config (`configs/imagenette.yaml` + the gpu preset, 5 epochs) runs alone, for its wall
time; then the recipes below run `--parallel` at a time, in order, until the deadline (runs not started by then
are skipped). Every finished run is appended to OUT/leaderboard_gpu.json at once, so a killed sweep keeps what
it finished. The accuracy of a recipe does not depend on the device (the same bf16-mixed autocast on CPU and
GPU), so the sweep picks what the CPU runs then confirm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leaderboard import REPO, record, run_recipe

from imagenette_drift.io import write_text_atomic

BASE = [
    "--model.model_name=resnet18d",
    "--data.train_image_size=144",
    "--data.image_size=176",
    "--data.min_scale=0.5",
    "--model.optimizer.init_args.lr=0.2",
    "--model.tta_flip=true",
]
LR04 = ["--model.optimizer.init_args.lr=0.4"]
LR06 = ["--model.optimizer.init_args.lr=0.6"]
CUR = [*BASE, *LR04]  # configs/imagenette.yaml since round 4
PROG_128_160 = ["--data.train_image_size=160", "--data.train_size_schedule=[128,144,160]"]
PROG_112_176 = ["--data.train_image_size=176", "--data.train_size_schedule=[112,128,144,160,176]"]


def muon(lr: float) -> list[str]:
    """Muon for the conv filters at `lr`, SGD at the config's 0.4 for norms, biases and the head."""
    return [
        "--model.optimizer=imagenette_drift.optim.ConvMuonSGD",
        f"--model.optimizer.init_args.lr={lr}",
        "--model.optimizer.init_args.sgd_lr=0.4",
        "--model.optimizer.init_args.momentum=0.95",
    ]


BLUR = ["--model.timm_kwargs={aa_layer: blurpool}"]
EMA = [
    "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
    "--trainer.callbacks.decay=0.99",
]
# name -> (epochs, seed, flags) on top of configs/imagenette.yaml (ResNet-18-D, train 144 / eval 176 px, crops of
# 50-100%: 81.62% at 5 epochs on CPU); the flags repeat the recipe so the sweep stays put if the config moves.
# In the order they start: the two 20-epoch runs first (the longest), then the 5-epoch levers, likeliest first.
RECIPES: dict[str, tuple[int, int, list[str]]] = {
    "r18d-20ep": (20, 0, BASE),
    "r18d-20ep-t160-scale0.35": (20, 0, [*BASE, "--data.train_image_size=160", "--data.min_scale=0.35"]),
    "r18d-t160": (5, 0, [*BASE, "--data.train_image_size=160"]),
    "r18d-scale0.65": (5, 0, [*BASE, "--data.min_scale=0.65"]),
    "r18d-bs32-lr0.1": (5, 0, [*BASE, "--data.batch_size=32", "--model.optimizer.init_args.lr=0.1"]),
    "r18d-lr0.4": (5, 0, [*BASE, "--model.optimizer.init_args.lr=0.4"]),
    "r18d-ls0": (5, 0, [*BASE, "--model.label_smoothing=0.0"]),
    "r18d-warm0.1": (5, 0, [*BASE, "--model.warmup_fraction=0.1"]),
    "r18d-linear": (5, 0, [*BASE, "--model.scheduler=linear"]),
    "r18d-wd5e-4": (5, 0, [*BASE, "--model.optimizer.init_args.weight_decay=5e-4"]),
    "r18d-blurpool": (5, 0, [*BASE, "--model.timm_kwargs={aa_layer: blurpool}"]),
    "r18d-adamw": (
        5,
        0,
        [
            *BASE,
            "--model.optimizer=torch.optim.AdamW",
            "--model.optimizer.init_args.lr=0.003",
            "--model.optimizer.init_args.weight_decay=0.05",
        ],
    ),
    "r18d-lamb": (
        5,
        0,
        [
            *BASE,
            "--model.optimizer=timm.optim.Lamb",
            "--model.optimizer.init_args.lr=0.002",
            "--model.optimizer.init_args.weight_decay=0.02",
        ],
    ),
    "r18d-ema0.99": (5, 0, [*BASE, *EMA]),
    "r18d-s1": (5, 1, BASE),
    # Round 3: the two winners of round 2 (lr 0.4, BlurPool) together, and the seeds to trust them.
    "r18d-base-s0": (5, 0, BASE),
    "r18d-lr0.4-blurpool": (5, 0, [*BASE, *LR04, *BLUR]),
    "r18d-lr0.4-blurpool-s1": (5, 1, [*BASE, *LR04, *BLUR]),
    "r18d-lr0.4-s1": (5, 1, [*BASE, *LR04]),
    "r18d-lr0.6": (5, 0, [*BASE, "--model.optimizer.init_args.lr=0.6"]),
    "r18d-lr0.4-blurpool-20ep": (20, 0, [*BASE, *LR04, *BLUR]),
    # Round 4: higher still.
    "r18d-lr0.6-s1": (5, 1, [*BASE, *LR06]),
    "r18d-lr0.8": (5, 0, [*BASE, "--model.optimizer.init_args.lr=0.8"]),
    "r18d-lr0.6-blurpool": (5, 0, [*BASE, *LR06, *BLUR]),
    "r18d-lr0.6-blurpool-s1": (5, 1, [*BASE, *LR06, *BLUR]),
    "r18d-lr0.6-blurpool-20ep": (20, 0, [*BASE, *LR06, *BLUR]),
    "r18d-lr0.4-blurpool-t160-20ep": (20, 0, [*BASE, *LR04, *BLUR, "--data.train_image_size=160"]),
    # Round 5 (on top of lr 0.4, the config since round 4): the levers not measured before.
    "r18d-lr0.4-muon0.02": (5, 0, [*CUR, *muon(0.02)]),
    "r18d-lr0.4-muon0.05": (5, 0, [*CUR, *muon(0.05)]),
    "r18d-lr0.4-muon0.1": (5, 0, [*CUR, *muon(0.1)]),
    "r18d-lr0.4-muon0.2": (5, 0, [*CUR, *muon(0.2)]),
    "r18d-lr0.4-mixup0.2": (5, 0, [*CUR, "--model.mixup_alpha=0.2"]),
    "r18d-lr0.4-cutmix1-p0.5": (5, 0, [*CUR, "--model.cutmix_alpha=1.0", "--model.mix_prob=0.5"]),
    "r18d-lr0.4-prog112-176": (5, 0, [*CUR, *PROG_112_176]),
    "r18d-lr0.4-prog128-160": (5, 0, [*CUR, *PROG_128_160]),
    "r18d-bs32-lr0.2": (5, 0, [*BASE, "--data.batch_size=32", "--model.optimizer.init_args.lr=0.2"]),
    "r18d-lr0.4-ls0.2": (5, 0, [*CUR, "--model.label_smoothing=0.2"]),
    "r18d-lr0.4-muon0.05-20ep": (20, 0, [*CUR, *muon(0.05)]),
    "r18d-lr0.4-cutmix1-p0.5-20ep": (20, 0, [*CUR, "--model.cutmix_alpha=1.0", "--model.mix_prob=0.5"]),
    # Round 6: Muon won round 5 by 5 points; its seeds, its cost levers and 20-epoch variants.
    "r18d-lr0.4-muon0.1-20ep": (20, 0, [*CUR, *muon(0.1)]),
    "r18d-lr0.4-muon0.1-blurpool-20ep": (20, 0, [*CUR, *muon(0.1), *BLUR]),
    "r18d-lr0.4-muon0.05-t160-20ep": (20, 0, [*CUR, *muon(0.05), "--data.train_image_size=160"]),
    "r18d-lr0.4-muon0.1-s1": (5, 1, [*CUR, *muon(0.1)]),
    "r18d-lr0.4-muon0.05-s1": (5, 1, [*CUR, *muon(0.05)]),
    "r18d-lr0.4-muon0.1-ns3": (5, 0, [*CUR, *muon(0.1), "--model.optimizer.init_args.ns_steps=3"]),
    "r18d-lr0.4-muon0.1-prog128-160": (5, 0, [*CUR, *muon(0.1), *PROG_128_160]),
    "r18d-lr0.4-muon0.1-sgd0.2": (5, 0, [*CUR, *muon(0.1), "--model.optimizer.init_args.sgd_lr=0.2"]),
    "r18d-lr0.4-muon0.1-blurpool": (5, 0, [*CUR, *muon(0.1), *BLUR]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/imagenette-cache"))
    parser.add_argument("--run-root", type=Path, default=Path("/tmp/sweep-runs"), help="run folders (big)")
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--workers", type=int, default=5, help="data loader workers per run")
    parser.add_argument("--deadline-s", type=float, default=420.0)
    parser.add_argument("--only", nargs="*", default=None, help="run only these recipe names")
    parser.add_argument("--accelerator", default="gpu", help="cpu only to try the sweep's mechanics")
    parser.add_argument("--skip-official", action="store_true", help="no solo run of the official config")
    parser.add_argument("--eval-size", type=int, nargs="+", default=[176, 192])
    parser.add_argument(
        "--epochs", type=int, default=None, help="override every recipe's epochs (smoke runs)"
    )
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lock = threading.Lock()
    presets = [REPO / "configs" / "presets" / "gpu.yaml", REPO / "configs" / "presets" / "csv.yaml"]
    device_flags = [f"--trainer.accelerator={args.accelerator}"]
    if not args.skip_official:
        official_run(args, presets, device_flags)  # alone, with torch's default threads
    # Parallel runs with torch's default thread count (one per core each) oversubscribe the CPU so badly
    # that a first try of this sweep finished nothing in 450 s: give each run's main process a fair share.
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (args.parallel * (args.workers + 1))))
    )

    def one(name: str) -> None:
        if time.perf_counter() - start > args.deadline_s:
            print(f"skip {name}: past the deadline", flush=True)
            return
        epochs, seed, flags = RECIPES[name]
        flags = [
            f"--trainer.max_epochs={args.epochs or epochs}",
            *flags,
            *device_flags,
            f"--data.cache_dir={args.cache_dir}",
            f"--data.num_workers={args.workers}",
        ]
        started = time.perf_counter() - start
        print(f"start {name} at {started:.0f} s", flush=True)
        try:
            row = run_recipe(
                name,
                seed,
                flags,
                presets=presets,
                data=args.data.resolve(),
                run_root=args.run_root,
                eval_sizes=args.eval_size,
            )
        except subprocess.CalledProcessError as e:
            print(f"FAILED {name}: {e}", flush=True)
            return
        with lock:
            record(row, args.results, stem="leaderboard_gpu")
        print(
            f"{name}: top1 {row['test_top1']:.4f} {row.get('test_top1_by_eval_size')} fit {row['fit_wall_s']} s"
            f" (ended at {time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    names = args.only or list(RECIPES)
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, names))


def official_run(args, presets: list[Path], device_flags: list[str]) -> None:
    """The official config alone on the machine: its wall time is the GPU figure benchmarks/results/README.md reports."""
    official = args.run_root / "official"
    official.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "imagenette_drift", "fit", "--config", str(REPO / "configs/imagenette.yaml")]
    cmd += [*(x for p in presets for x in ("--config", str(p))), f"--data.root={args.data.resolve()}"]
    cmd += [*device_flags, "--trainer.enable_progress_bar=false", f"--data.cache_dir={args.cache_dir}"]
    if args.epochs:
        cmd.append(f"--trainer.max_epochs={args.epochs}")
    t0 = time.perf_counter()
    with open(official / "fit.log", "w") as log:
        rc = subprocess.run(cmd, cwd=official, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    summary = {"command": cmd, "returncode": rc, "wall_s": round(wall, 1)}
    for metrics in official.rglob("*_metrics.json"):
        summary[metrics.stem] = json.loads(metrics.read_text())
    write_text_atomic(args.results / "official_gpu.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
