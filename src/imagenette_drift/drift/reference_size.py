"""The smallest drift reference that calibrates each drift test at a window size, and the refusal below it.

A reference (the held-out images whose embeddings, softmax outputs and input statistics the checkpoint
stores) too small for the window tested makes a test false-alarm on clean traffic: over many references its
false-positive rate at alpha 0.05 leaves [0.02, 0.08] on average, or one reference's own rate strays far above
it (its spread between references exceeds 0.04, so that fewer than 9 references in 10 stay below 0.10).
`benchmarks/reference_size.py` measures, per test and window size, the smallest size that stays calibrated
(`benchmarks/results/reference_size.md`); `MIN_REFERENCE` holds that table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from imagenette_drift.errors import UserError

__all__ = [
    "ALL_TESTS",
    "LABEL_SHIFT_MIN_PER_CLASS",
    "MIN_REFERENCE",
    "ReferenceTooSmallError",
    "check_reference_size",
    "label_shift_testable",
    "min_reference_size",
    "reference_size_problem",
]

ALL_TESTS = ("mmd", "ks", "chi2", "inputs")
# test -> {window size: smallest calibrated reference}, from benchmarks/results/reference_size.md (40 reference
# draws per cell, sizes of 1, 2, 4 and 8 windows), made non-decreasing in the window (a larger window never
# needs a smaller reference; the measurement's noise put MMD's 50-window cell above its 100-window one). A window
# between two columns takes the larger column's size; below the first, the first's; above the last, the last's.
MIN_REFERENCE: dict[str, dict[int, int]] = {
    "mmd": {20: 20, 50: 200, 100: 200, 200: 400},
    "ks": {20: 20, 50: 100, 100: 100, 200: 400},
    "chi2": {20: 80, 50: 100, 100: 800, 200: 800},
    "inputs": {20: 40, 50: 100, 100: 200, 200: 400},
}


# The label-shift (chi-squared) test needs about 5 records per class in a window: smaller windows leave it
# untested rather than raise false alarms (its rate varies far more between references there).
LABEL_SHIFT_MIN_PER_CLASS = 5


def label_shift_testable(window: int, num_classes: int) -> bool:
    """Whether a window of `window` predictions gets the chi-squared label-shift test."""
    return window >= LABEL_SHIFT_MIN_PER_CLASS * num_classes


class ReferenceTooSmallError(UserError, ValueError):
    """The checkpoint's drift reference holds too few images to calibrate the drift tests at this window."""


def _for_window(table: dict[int, int], window: int) -> int:
    for size in sorted(table):
        if window <= size:
            return table[size]
    return table[max(table)]


def min_reference_size(window: int, tests: Iterable[str] = ALL_TESTS) -> int:
    """The smallest reference (images) that calibrates every test in `tests` on windows of `window` images.

    Raises:
        ValueError: a test name outside `ALL_TESTS`.
    """
    tests = tuple(tests)
    unknown = sorted(set(tests) - set(ALL_TESTS))
    if unknown:
        raise ValueError(f"unknown drift test(s) {unknown}; choose from {list(ALL_TESTS)}.")
    return max(_for_window(MIN_REFERENCE[t], window) for t in tests)


Tests = Iterable[str] | Callable[[int], Iterable[str]]


def _tests_at(tests: Tests, window: int) -> tuple[str, ...]:
    return tuple(tests(window) if callable(tests) else tests)


def reference_size_problem(n_reference: int, window: int, tests: Tests = ALL_TESTS) -> str | None:
    """One line naming the sizes and the fixes when `n_reference` is below what `window` needs, else None.

    `tests` is the tests a window runs, or a function of the window size giving them (a smaller window may run
    fewer: the label-shift test needs 5 records per class), so the suggested smaller window is one whose own
    tests the reference calibrates.
    """
    if not callable(tests):
        tests = tuple(tests)
    needed = min_reference_size(window, _tests_at(tests, window))
    if n_reference >= needed:
        return None
    fitting = [w for w in range(2, window) if min_reference_size(w, _tests_at(tests, w)) <= n_reference]
    window_fix = f", or test windows of at most {fitting[-1]} images" if fitting else ""
    return (
        f"the drift reference holds {n_reference} images, fewer than the {needed} that calibrate drift tests "
        f"on windows of {window} (benchmarks/results/reference_size.md): refit it on at least {needed} "
        f"held-out images (`imagenette drift --ckpt_path CKPT --refit_reference DIR`, or fit with a larger "
        f"--data.val_fraction){window_fix}"
    )


def check_reference_size(n_reference: int, window: int, tests: Tests = ALL_TESTS) -> None:
    """Raise `ReferenceTooSmallError` (one line: the sizes and the fixes) when the reference is too small.

    Args:
        n_reference: images in the drift reference (`DriftReference.n_reference`).
        window: images per tested window.
        tests: the tests that will run (`mmd`, `ks`, `chi2`, `inputs`), or a function of the window size
            giving them.
    """
    problem = reference_size_problem(n_reference, window, tests)
    if problem is not None:
        raise ReferenceTooSmallError(problem[0].upper() + problem[1:] + ".")
