"""The harm alert: estimated accuracy stayed well below the held-out accuracy for several windows."""

from __future__ import annotations

from typing import Any

__all__ = ["HarmAlert"]


class HarmAlert:
    """Alert when estimated accuracy stays more than `drop_points` below the held-out accuracy for `windows`
    consecutive windows: harm, as opposed to a (possibly harmless) change in distribution.

    Feed one estimate per window with `update`; it returns whether the alert is on. A window back above the
    line resets the count. State is plain numbers (`state_dict`), so a restarted monitor resumes it.
    """

    def __init__(self, heldout_accuracy: float, drop_points: float = 5.0, windows: int = 2) -> None:
        """Args:
        heldout_accuracy: accuracy on the held-out split, a fraction in [0, 1].
        drop_points: alert when the estimate is more than this many percentage points below it.
        windows: consecutive windows the drop must last.
        """
        if not 0.0 <= heldout_accuracy <= 1.0:
            raise ValueError(f"heldout_accuracy must be a fraction in [0, 1], got {heldout_accuracy}.")
        if drop_points <= 0:
            raise ValueError(f"drop_points must be > 0 (percentage points), got {drop_points}.")
        if windows < 1:
            raise ValueError(f"windows must be >= 1, got {windows}.")
        self.heldout_accuracy = heldout_accuracy
        self.drop_points = drop_points
        self.windows = windows
        self.consecutive = 0

    def drop(self, estimate: float) -> float:
        """Percentage points below the held-out accuracy (negative when above)."""
        return 100.0 * (self.heldout_accuracy - estimate)

    def update(self, estimate: float) -> bool:
        """Record one window's estimated accuracy (a fraction); True while the alert is on."""
        self.consecutive = self.consecutive + 1 if self.drop(estimate) > self.drop_points else 0
        return self.alerting

    @property
    def alerting(self) -> bool:
        return self.consecutive >= self.windows

    def state_dict(self) -> dict[str, Any]:
        return {
            "heldout_accuracy": self.heldout_accuracy,
            "drop_points": self.drop_points,
            "windows": self.windows,
            "consecutive": self.consecutive,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> HarmAlert:
        alert = cls(state["heldout_accuracy"], state["drop_points"], state["windows"])
        alert.consecutive = int(state["consecutive"])
        return alert
