"""Time our drift tests against torchdrift's KernelMMDDriftDetector on the same data, in one run.

Data: isotropic Gaussian features (reference N(0, I), test N(0.05, I)), n_ref=1000, n_test=200, d=512; the
timings do not depend on the values. Run: ``python benchmarks/drift_speed.py [--threads 1]``.
torchdrift is the benchmark-only extra: ``pip install 'imagenette-drift[bench]'``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from imagenette_drift.drift import MMDDriftDetector, OnlineDriftMonitor

N_REF, N_TEST, DIM = 1000, 200, 512


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _once(fn: Callable[[], object]) -> float:
    return _median_seconds(fn, 1)


def _torchdrift_seconds(reference: torch.Tensor, x: torch.Tensor, repeats: int) -> float | str:
    try:
        from torchdrift.detectors.mmd import KernelMMDDriftDetector
    except Exception as e:  # report any import-time incompatibility instead of crashing the benchmark
        return f"torchdrift unavailable ({type(e).__name__}: {e}); install with pip install 'imagenette-drift[bench]'"
    detector = KernelMMDDriftDetector(return_p_value=True, n_perm=100)
    detector.fit(reference)
    detector(x)  # warm-up
    return _median_seconds(lambda: detector(x), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per row (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(N_REF, DIM, generator=generator)
    x = torch.randn(N_TEST, DIM, generator=generator) + 0.05
    stream = torch.randn(2000, DIM, generator=generator)

    rows: list[tuple[str, str]] = []
    theirs = _torchdrift_seconds(reference, x, args.repeats)
    ours, ours_cold = {}, {}
    for n_perm in (100, 1000):
        detector = MMDDriftDetector(reference, n_permutations=n_perm)
        cold = ours_cold[n_perm] = _once(lambda det=detector: det.test(x))  # first test draws permutations
        ours[n_perm] = _median_seconds(lambda det=detector: det.test(x), args.repeats)
        rows.append((f"ours MMD, {n_perm} perms, first test (draws permutations)", f"{cold * 1e3:8.2f} ms"))
        rows.append((f"ours MMD, {n_perm} perms, per test", f"{ours[n_perm] * 1e3:8.2f} ms"))
    if isinstance(theirs, float):
        rows.insert(0, ("torchdrift KernelMMDDriftDetector, 100 perms", f"{theirs * 1e3:8.2f} ms"))
    construct = _once(lambda: MMDDriftDetector(reference, n_permutations=100))
    rows.append(("ours MMD construction (bandwidth + cached K_ref)", f"{construct * 1e3:8.2f} ms"))

    holder: list[OnlineDriftMonitor] = []
    calibration = _once(lambda: holder.append(OnlineDriftMonitor(reference, window_size=200)))
    monitor = holder[0]
    monitor.update(stream[:200])  # fill the window so every timed update computes a statistic
    per_update = _once(lambda: [monitor.update(row) for row in stream[200:]]) / (len(stream) - 200)
    batched = _once(lambda: monitor.update(stream[200:])) / (len(stream) - 200)
    rows.append(("online calibration (window 200, ERT 1000, 2000 streams)", f"{calibration:8.2f} s "))
    rows.append(("online update, one image per call", f"{per_update * 1e3:8.3f} ms"))
    rows.append(("online update, 1800 images in one call", f"{batched * 1e3:8.3f} ms/image"))

    print(f"n_ref={N_REF}, n_test={N_TEST}, d={DIM}, Gaussian features, torch threads={args.threads}")
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}}  time")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if isinstance(theirs, float):
        print(
            f"speedup vs torchdrift at 100 perms: {theirs / ours[100]:.1f}x per test, "
            f"{theirs / ours_cold[100]:.1f}x on a first test (permutations drawn)"
        )
    else:
        print(theirs)


if __name__ == "__main__":
    main()
