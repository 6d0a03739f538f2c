"""CPU time of the input statistics (`drift.image_stats.image_statistics`) per image: the float definition
(what it cost before the uint8 path) beside the uint8 path, same images, same run, one thread.

Run: ``python benchmarks/image_stats_speed.py [--root data/sample/imagenette2-160] [--size 176]
[--checkpoint CKPT]``. The figure is thread CPU time (`time.thread_time`), so other jobs on the machine inflate
it less than wall time, though a loaded machine still slows both paths (shared caches). With `--checkpoint`,
a last row times one image per call right after the model's forward pass on it, as in the serving worker:
the forward pass evicts the caches, which costs both paths more than the warm rows show.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from imagenette_drift.data import build_eval_transform, read_image
from imagenette_drift.drift.image_stats import _float_statistics, image_statistics


def _cpu_ms_per_image(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, repeats: int
) -> float:
    fn(images)  # warm-up
    rounds = []
    for _ in range(repeats):
        start = time.thread_time()
        fn(images)
        rounds.append((time.thread_time() - start) * 1e3 / len(images))
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/sample/imagenette2-160"))
    parser.add_argument("--size", type=int, default=176, help="eval-transform size (the quickstart model's)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row (median reported)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="add the after-a-forward-pass row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transform = build_eval_transform(args.size)
    paths = sorted((args.root / "val").rglob("*.JPEG"))
    if not paths:
        raise SystemExit(f"No images under {args.root / 'val'}: pass --root an Imagenette folder.")
    images = torch.stack([transform(read_image(p)) for p in paths])  # uint8 (N, 3, S, S)

    def float_definition(x: torch.Tensor) -> torch.Tensor:
        return _float_statistics(x.float() / 255.0)

    print(
        f"{len(paths)} real images at {args.size} px, uint8 model inputs, 1 thread, CPU ms per image (median)"
    )
    print(f"{'batch':>5}  {'float definition (before)':>25}  {'uint8 path (now)':>16}  speedup")
    with torch.inference_mode():
        for batch in (1, 8, 32):
            chunks = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
            before = statistics.median(_cpu_ms_per_image(float_definition, c, args.repeats) for c in chunks)
            after = statistics.median(_cpu_ms_per_image(image_statistics, c, args.repeats) for c in chunks)
            print(f"{batch:>5}  {before:>25.3f}  {after:>16.3f}  {before / after:6.1f}x")
        if args.checkpoint is not None:
            from imagenette_drift.checkpoint import load_for_inference

            model = load_for_inference(args.checkpoint)
            inputs = [model.transform(read_image(p))[None] for p in paths]
            cost = {"before": 0.0, "after": 0.0}
            for _ in range(3):
                for x in inputs:
                    for name, fn in (("before", float_definition), ("after", image_statistics)):
                        model.embed_and_predict(x)
                        start = time.thread_time()
                        fn(x)
                        cost[name] += time.thread_time() - start
            before, after = (cost[k] * 1e3 / (3 * len(inputs)) for k in ("before", "after"))
            size = inputs[0].shape[-1]
            print(
                f"one image per call right after the model's forward pass ({size} px, the checkpoint's transform):"
            )
            print(f"{1:>5}  {before:>25.3f}  {after:>16.3f}  {before / after:6.1f}x")


if __name__ == "__main__":
    main()
