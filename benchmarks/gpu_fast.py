"""Time the 5-epoch fit with `configs/presets/gpu_fast.yaml` on one GPU and test what it trained.

    python benchmarks/gpu_fast.py --data DIR --results OUT [--deadline-s 240] [--only NAME ...]

Each run is `imagenette fit --config configs/imagenette.yaml [--config configs/presets/leaderboard.yaml]
--config configs/presets/gpu_fast.yaml --config configs/presets/csv.yaml <flags>` in a fresh folder, alone on
the machine; its wall time is the whole process (imports, decoding the images, training, the final validation,
drift reference and checkpoint), and `FitClock` splits it. Then `imagenette test` on `last.ckpt` twice, on
the CPU loaders (what `make train` tests with): our evaluation (the config's 176 px with the TTA flip) and the
leaderboard's (128 px, no TTA). Rows go to OUT/gpu_fast.json as each run ends; runs not started before the
deadline are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


class FitClock(pl.Callback):
    """Write wall-clock timestamps (seconds since the epoch) of a fit's phases to `output` as JSON.

    `created`: when the CLI built the callbacks (imports and config parsing done); `train_start`: the first
    training batch is next (model on the device, images decoded); `train_end`: the last optimizer step
    done, with the final validation, drift reference and checkpoints; `fit_end`: the fit loop torn down.
    """

    def __init__(self, output: str = "fit_clock.json") -> None:
        self.output = Path(output)
        self.times: dict[str, float] = {"created": time.time()}

    def _mark(self, name: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times[name] = time.time()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark("train_start")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark("train_end")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark("fit_end")
        self.output.write_text(json.dumps(self.times))


LEADERBOARD = [CONFIGS / "presets" / "leaderboard.yaml"]


def _flags(batch: int, lr: float, sgd_lr: float) -> list[str]:
    return [
        f"--data.batch_size={batch}",
        f"--model.optimizer.init_args.lr={lr}",
        f"--model.optimizer.init_args.sgd_lr={sgd_lr}",
    ]


# name -> (extra configs before gpu_fast.yaml, flags, test it); in the order they run.
RUNS: dict[str, tuple[list[Path], list[str], bool]] = {
    "official": ([], [], True),  # the shipped config + the preset, as `make train` would run it on a GPU
    "leaderboard-s0-profiled": (LEADERBOARD, ["--seed_everything=0", "--trainer.profiler=simple"], True),
    "leaderboard-s1": (LEADERBOARD, ["--seed_everything=1"], True),
    # Larger batches (learning rates scaled by the square root) and cuDNN autotuning, measured before.
    "official-bs256": ([], [*_flags(256, 0.2, 0.8), "--trainer.benchmark=true"], True),
    "official-bs256-no-cudnn-benchmark": ([], _flags(256, 0.2, 0.8), False),
    "leaderboard-bs256-s0": (LEADERBOARD, ["--seed_everything=0", *_flags(256, 0.2, 0.8)], True),
    "leaderboard-bs128-s0": (LEADERBOARD, ["--seed_everything=0", *_flags(128, 0.14, 0.57)], True),
}


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    return rc, time.perf_counter() - start


def fit_and_test(
    name: str,
    data: Path,
    run_root: Path,
    workers: int,
    configs: list[Path],
    flags: list[str],
    test: bool,
    accelerator: str = "gpu",
) -> dict[str, Any]:
    """One fit (timed, alone), then its two tests side by side; the result row."""
    run_dir = run_root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(REPO / "src"), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    exe = [sys.executable, "-m", "imagenette_drift"]
    common = ["--config", str(CONFIGS / "imagenette.yaml")]
    for config in [*configs, CONFIGS / "presets" / "gpu_fast.yaml", CONFIGS / "presets" / "csv.yaml"]:
        common += ["--config", str(config)]
    common += [f"--data.root={data}", f"--trainer.accelerator={accelerator}"]
    clock = run_dir / "fit_clock.json"
    fit_cmd = [
        *exe,
        "fit",
        *common,
        "--trainer.callbacks+=gpu_fast.FitClock",
        f"--trainer.callbacks.output={clock}",
        *flags,
    ]
    started = time.time()
    rc, wall = _run(fit_cmd, run_dir, run_dir / "fit.log", env)
    row: dict[str, Any] = {"name": name, "configs": [str(c.relative_to(REPO)) for c in configs]}
    row |= {"flags": flags, "fit_returncode": rc, "fit_wall_s": round(wall, 2)}
    if clock.exists():
        times = json.loads(clock.read_text())
        row["fit_phases_s"] = {
            "start_to_callbacks_built": round(times["created"] - started, 2),
            "to_first_batch": round(times["train_start"] - times["created"], 2),
            "training_validation_checkpoints": round(times["train_end"] - times["train_start"], 2),
            "to_fit_end": round(times["fit_end"] - times["train_end"], 2),
            "after_fit_end_to_exit": round(started + wall - times["fit_end"], 2),
        }
    for metrics in run_dir.rglob("val_metrics.json"):
        row["heldout_val"] = json.loads(metrics.read_text())
    ckpt = run_dir / "outputs" / "imagenette" / "checkpoints" / "last.ckpt"
    if rc != 0 or not test or not ckpt.exists():
        return row
    evals = {
        "ours_176px_tta": [],
        "leaderboard_128px_no_tta": ["--data.image_size=128", "--model.tta_flip=false"],
    }

    def one_test(item: tuple[str, list[str]]) -> tuple[str, dict]:
        key, extra = item
        out = run_dir / f"test-{key}"
        out.mkdir(exist_ok=True)
        cmd = [*exe, "test", *common, f"--ckpt_path={ckpt}", f"--data.num_workers={workers}", *extra]
        test_rc, seconds = _run(cmd, out, out / "test.log", env)
        found = list(out.rglob("test_metrics.json"))
        metrics = json.loads(found[0].read_text()) if found and test_rc == 0 else {"returncode": test_rc}
        return key, metrics | {"test_wall_s": round(seconds, 1)}

    with ThreadPoolExecutor(len(evals)) as pool:
        row["test_on_official_val"] = dict(pool.map(one_test, evals.items()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the imagenette2-160 folder")
    parser.add_argument("--results", type=Path, required=True, help="gpu_fast.json goes here")
    parser.add_argument("--run-root", type=Path, default=Path("/tmp/gpu-fast-runs"))
    parser.add_argument("--deadline-s", type=float, default=240.0, help="start no run after this")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="test loader workers")
    parser.add_argument("--only", nargs="*", default=None, help="these runs only")
    parser.add_argument("--extra", action="append", default=[], help="a flag added to every fit (smoke runs)")
    parser.add_argument("--accelerator", default="gpu", help="cpu only to try the mechanics")
    parser.add_argument("--commit", default=None, help="recorded as the commit (default: git's HEAD)")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    summary: dict[str, Any] = {
        "machine": f"{device}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "commit": args.commit or commit.stdout.strip() or "unknown",
        "runs": [],
    }
    for name in args.only or list(RUNS):
        if time.perf_counter() - start > args.deadline_s:
            print(f"skip {name}: past the deadline", flush=True)
            continue
        configs, flags, test = RUNS[name]
        row = fit_and_test(
            name,
            args.data.resolve(),
            args.run_root,
            args.workers,
            configs,
            [*flags, *args.extra],
            test,
            args.accelerator,
        )
        summary["runs"].append(row)
        (args.results / "gpu_fast.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(row), flush=True)
        if row["fit_returncode"] != 0:  # the others would fail the same way: show why and stop
            print((args.run_root / name / "fit.log").read_text()[-4000:], flush=True)
            break


if __name__ == "__main__":
    main()
