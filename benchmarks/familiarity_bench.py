"""Cost of per-request familiarity (k-NN distance + energy + JSON) per image, beside the model's forward pass.

Target: at most 0.5 ms per image on 2 cores. The familiarity reference is the one `imagenette fit`
stores (bank of `--bank` L2-normalised fp16 embeddings of dimension 512, a 10-class linear head, k=5); the
baseline in the same run is a ResNet-18 forward pass at 160 px (the served model, untrained weights: the
timing does not depend on them). Run: ``python benchmarks/familiarity_bench.py [--threads 2] [--bank 1000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from imagenette_drift.familiarity.reference import FamiliarityReference
from imagenette_drift.models.net import ImagenetteNet

DIM, CLASSES = 512, 10


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--bank", type=int, default=1000, help="reference bank size")
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions per row (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    held_out = torch.randn(args.bank + 200, DIM, generator=g).relu()  # post-ReLU pooled features
    reference = FamiliarityReference.fit(
        held_out, torch.randn(CLASSES, DIM, generator=g) * 0.05, torch.zeros(CLASSES), bank_size=args.bank
    )
    net = ImagenetteNet("resnet18", CLASSES).eval()
    print(
        f"threads={args.threads}, bank={args.bank} x {DIM} (fp16 stored), k={reference.k}; median of {args.repeats}"
    )
    print(f"{'batch':>5} {'familiarity ms/image':>21} {'model forward ms/image':>23} {'share':>7}")
    for batch in (1, 8):
        emb = torch.randn(batch, DIM, generator=g).relu()
        images = torch.randint(0, 256, (batch, 3, 160, 160), dtype=torch.uint8, generator=g)
        ours = _median_ms(lambda emb=emb: reference.score_json(emb), args.repeats) / batch
        with torch.inference_mode():
            model = _median_ms(lambda images=images: net(images), max(5, args.repeats // 5)) / batch
        print(f"{batch:>5} {ours:>21.3f} {model:>23.2f} {ours / model:>7.1%}")
    print("target: familiarity <= 0.5 ms per image")


if __name__ == "__main__":
    main()
