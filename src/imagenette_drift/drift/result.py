"""Plain result records returned by the drift detectors and the online monitor."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["DriftResult", "OnlineDriftStatus"]


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one two-sample drift test.

    Attributes:
        statistic: The test statistic (MMD^2, max KS distance, or chi-squared).
        p_value: p-value of the test, already corrected for multiple testing where the method says so.
        drift: ``p_value < alpha``.
        method: Short name of the test, e.g. ``"mmd"``, ``"ks_bonferroni"``, ``"chi2"``.
        alpha: Significance level the decision used.
    """

    statistic: float
    p_value: float
    drift: bool
    method: str
    alpha: float

    def to_dict(self) -> dict[str, float | bool | str]:
        """Return the fields as a JSON-serialisable dict (for logging or an HTTP response)."""
        return asdict(self)


@dataclass(frozen=True)
class OnlineDriftStatus:
    """Snapshot of an `OnlineDriftMonitor` after an update; its fields are those of the `/drift` answer.

    Attributes:
        images_seen: Images seen since construction or the last ``reset()``.
        window_filled: Whether the sliding window holds ``window_size`` images (only then is there a statistic).
        statistic: Unbiased MMD^2 between the window and the reference, ``None`` until the window is filled.
        threshold: Threshold the statistic was compared against, ``None`` until the window is filled.
        drifting: ``statistic > threshold`` for the latest window.
        drifting_since: 1-based image index at which the current run of over-threshold windows began.
    """

    images_seen: int
    window_filled: bool
    statistic: float | None
    threshold: float | None
    drifting: bool
    drifting_since: int | None

    @property
    def n_seen(self) -> int:
        """Alias of `images_seen` (its name before the `/drift` contract)."""
        return self.images_seen

    def to_dict(self) -> dict[str, int | float | bool | None]:
        """The fields as a JSON-serialisable dict, keyed as in the `/drift` answer (`serve_contract.DriftStatus`)."""
        return asdict(self)
