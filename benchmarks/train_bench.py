"""Training throughput, from one run: loader only, step only, `imagenette fit`, and a plain PyTorch loop.

All four use the same model (ResNet-18 at 128 px), data, precision (the shipped configs' `auto`: bf16 autocast
where the CPU has native bfloat16, fp32 elsewhere; `imagenette_drift.hardware`), channels_last and batch size. The
plain loop is the baseline the Lightning engine is compared with (target: fit >= 0.97x). All use SGD; one more
step-only figure uses ConvMuonSGD (the config's optimizer), for what its Newton-Schulz iterations cost, and one
runs that step all in fp32 (fp32 forward/backward and Newton-Schulz): the shipped step must stay within 1.1x of
it on CPUs without native bf16 (`shipped_vs_fp32_step`; there the two are the same code path).

    python benchmarks/train_bench.py --data ../shared/data/imagenette2-160   # a few minutes here
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from imagenette_drift.data import ImagenetteDataModule
from imagenette_drift.hardware import resolve_precision
from imagenette_drift.io import write_text_atomic
from imagenette_drift.models import ImagenetteClassifier
from imagenette_drift.optim import ConvMuonSGD


def _datamodule(args: argparse.Namespace, cache: bool) -> ImagenetteDataModule:
    dm = ImagenetteDataModule(
        root=str(args.data) if args.data else None,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache_dir=str(args.cache_dir) if cache else None,
        verify=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _model() -> ImagenetteClassifier:
    return ImagenetteClassifier(model_name="resnet18", channels_last=True)


def loader_only(dm: ImagenetteDataModule, batches: int) -> float:
    loader = iter(dm.train_dataloader())
    next(loader)  # workers started
    start = time.perf_counter()
    n = sum(len(next(loader)[1]) for _ in range(batches))
    return n / (time.perf_counter() - start)


def _sgd(model: ImagenetteClassifier) -> torch.optim.Optimizer:
    return torch.optim.SGD(model._param_groups(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5)


PRECISION, PRECISION_REASON = resolve_precision("cpu")  # what the shipped configs resolve to here
BF16 = PRECISION == "bf16-mixed"


def _muon(model: ImagenetteClassifier) -> torch.optim.Optimizer:
    return ConvMuonSGD(model._param_groups(), lr=0.1, weight_decay=5e-5, sgd_lr=0.1)


def _muon_fp32(model: ImagenetteClassifier) -> torch.optim.Optimizer:
    return ConvMuonSGD(model._param_groups(), lr=0.1, weight_decay=5e-5, sgd_lr=0.1, ns_dtype="float32")


def step_only(dm: ImagenetteDataModule, steps: int, optimizer_factory=_sgd, bf16: bool = BF16) -> float:
    model = _model().train()
    optimizer = optimizer_factory(model)
    images, labels = next(iter(dm.train_dataloader()))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model._loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(labels) / (time.perf_counter() - start)


def plain_loop(dm: ImagenetteDataModule, batches: int) -> float:
    """The baseline: a hand-written loop over the same DataLoader, model, optimizer and precision."""
    model = _model().train()
    optimizer = _sgd(model)
    loader = iter(dm.train_dataloader())
    n, start = 0, 0.0
    for i in range(batches + 3):
        if i == 3:
            n, start = 0, time.perf_counter()
        images, labels = next(loader)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            loss = model._loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(labels)
    return n / (time.perf_counter() - start)


class _Throughput(pl.Callback):
    """Images/s over training batches 3..N (same warm-up as the plain loop)."""

    def __init__(self) -> None:
        self.n, self.start, self.end = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 3:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= 3:
            self.n += len(batch[1])
            self.end = time.perf_counter()


def lightning_fit(dm: ImagenetteDataModule, batches: int) -> float:
    meter = _Throughput()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=PRECISION,
        max_epochs=1,
        limit_train_batches=batches + 3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter],
    )
    model = _model()
    model.configure_optimizers = lambda: _sgd(model)  # same optimizer as the loop, no LR schedule
    trainer.fit(model, datamodule=dm)
    return meter.n / (meter.end - meter.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="imagenette2-160 root (default: $IMAGENETTE_DATA)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating repetitions of the engine comparison"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_bench.json"))
    args = parser.parse_args()

    decoded = _datamodule(args, cache=True)
    jpeg = _datamodule(args, cache=False)
    figures = {
        "loader_jpeg": loader_only(jpeg, args.batches * 2),
        "loader_cached": loader_only(decoded, args.batches * 2),
        "step_only": step_only(decoded, args.batches),
        "step_only_muon": step_only(decoded, args.batches, _muon),  # what the config's optimizer costs
        "step_only_muon_fp32": step_only(decoded, args.batches, _muon_fp32, bf16=False),
    }
    # The engine comparison alternates the two, `--rounds` times, and keeps the median of each, so that
    # neither profits from running later (warm page cache, CPU frequency).
    rounds: dict[str, list[float]] = {"plain_loop": [], "lightning_fit": [], "lightning_fit_jpeg": []}
    for _ in range(args.rounds):
        rounds["plain_loop"].append(plain_loop(decoded, args.batches))
        rounds["lightning_fit"].append(lightning_fit(decoded, args.batches))
        rounds["lightning_fit_jpeg"].append(lightning_fit(jpeg, args.batches))
    figures |= {name: statistics.median(values) for name, values in rounds.items()}
    ratios = {
        "fit_vs_plain_loop": figures["lightning_fit"] / figures["plain_loop"],
        "fit_vs_step_only": figures["lightning_fit"] / figures["step_only"],
        "muon_step_vs_sgd_step": figures["step_only_muon"] / figures["step_only"],
        # step time of the shipped precision over the all-fp32 step (images/s are inverse times)
        "shipped_vs_fp32_step": figures["step_only_muon_fp32"] / figures["step_only_muon"],
        "fit_cached_vs_fit_jpeg": figures["lightning_fit"] / figures["lightning_fit_jpeg"],
        "loader_cached_vs_step": figures["loader_cached"] / figures["step_only"],
        "loader_jpeg_vs_step": figures["loader_jpeg"] / figures["step_only"],
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    print(f"precision {PRECISION} ({PRECISION_REASON})")
    print(f"images/s (batch {args.batch_size}, {args.num_workers} workers, {PRECISION}, channels_last):")
    for name, value in figures.items():
        print(f"  {name:<16} {value:8.1f}")
    for name, value in ratios.items():
        print(f"  {name:<24} {value:6.3f}x")
    report = {
        "commit": commit,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "precision": PRECISION,
        "precision_reason": PRECISION_REASON,
        "rounds": rounds,
        **figures,
        **ratios,
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
