"""The canary decision: compare canary and stable on the same window, then promote, roll back, or hold.

Model-quality checks use each revision's logged records and its own model card:

- estimated top-1 on each revision's own card (`estimation/`): COT (Lu et al., NeurIPS 2023) when both cards
  store the held-out class shares, else ATC-MC (Garg et al., ICLR 2022), the same method for both,
- unfamiliar share (the share of records the server scored unfamiliar, `familiarity/reference.py`),
- class-share shift between the revisions' predicted classes: total-variation distance, and the chi-squared
  test of homogeneity of the 2 x C table of counts (`scipy.stats.chi2_contingency`).

Serving checks use each revision's Prometheus `/metrics` (`serving_metrics.py`): 5xx rate and p95 latency.

A drop counts only beyond its tolerance plus `z` binomial standard errors of the two shares (a one-sided
two-proportion margin), so a small window's noise does not roll back an equal model. Any failed check rolls
back; with no failure, too few records in either revision holds (bake longer); otherwise the canary is
promoted.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from imagenette_drift.card import ModelCard
from imagenette_drift.estimation.reference import EstimationReference
from imagenette_drift.monitoring.stats import list_matrix
from imagenette_drift.release.serving_metrics import ServingMetrics

Action = Literal["promote", "rollback", "hold"]


@dataclass(frozen=True)
class CanaryPolicy:
    """How much worse the canary may be before it is rolled back (fractions, not percent).

    Args:
        min_records: Records each revision needs in the window before the model-quality checks decide.
        accuracy_tolerance: Largest drop of estimated top-1 tolerated (0.02 = 2 points), before noise.
        unfamiliar_tolerance: Largest rise of the unfamiliar share tolerated, before noise.
        max_shift: Class-share shift (total variation) tolerated when the chi-squared test finds it
            significant.
        alpha: Significance level of the chi-squared test of the class shares.
        z: Standard errors of noise allowed on top of the two tolerances (1.645: one-sided 95%).
        max_error_increase: Largest rise of the 5xx rate tolerated (0.01 = 1 point).
        max_latency_increase: Largest relative rise of p95 latency tolerated (0.25 = 25%).
    """

    min_records: int = 100
    accuracy_tolerance: float = 0.02
    unfamiliar_tolerance: float = 0.05
    max_shift: float = 0.1
    alpha: float = 0.01
    z: float = 1.645
    max_error_increase: float = 0.01
    max_latency_increase: float = 0.25

    def __post_init__(self) -> None:
        fractions = ("accuracy_tolerance", "unfamiliar_tolerance", "max_shift", "max_error_increase")
        for name in fractions:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)!r}.")
        if not 0.0 < self.alpha < 1.0 or self.z < 0 or self.min_records < 1 or self.max_latency_increase < 0:
            raise ValueError(
                "alpha must be in (0, 1), z >= 0, min_records >= 1 and max_latency_increase >= 0; got "
                f"alpha={self.alpha}, z={self.z}, min_records={self.min_records}, "
                f"max_latency_increase={self.max_latency_increase}."
            )


@dataclass(frozen=True)
class RevisionStats:
    """One revision's window: records, estimated top-1, unfamiliar share, predicted-class counts, serving."""

    name: str
    model_sha256: str
    revision: str | None
    n: int
    estimated_accuracy: float | None
    n_familiarity: int
    unfamiliar_share: float | None
    class_counts: dict[str, int]
    serving: ServingMetrics | None = None
    estimation_method: str | None = None  # the estimator behind `estimated_accuracy`

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["serving"] = None if self.serving is None else self.serving.to_dict()
        return data


@dataclass(frozen=True)
class Check:
    """One comparison: passed (None: not measured), both sides' values, and a one-line detail."""

    name: str
    passed: bool | None
    stable: float | None
    canary: float | None
    detail: str


@dataclass(frozen=True)
class CanaryDecision:
    """The action, its one-line reason, every check, both revisions' statistics, the window and the policy."""

    action: Action
    reason: str
    checks: list[Check]
    stable: RevisionStats
    canary: RevisionStats
    window_start: str | None
    window_end: str | None
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
            "stable": self.stable.to_dict(),
            "canary": self.canary.to_dict(),
            "window_start": self.window_start,
            "window_end": self.window_end,
            "policy": asdict(self.policy),
        }


def revision_stats(
    name: str, records: pa.Table, card: ModelCard, model_sha256: str, revision: str | None,
    serving: ServingMetrics | None = None, method: str | None = None,
) -> RevisionStats:  # fmt: skip
    """Statistics of one revision's records (`canary_log.COLUMNS`), estimated with its own card.

    `method`: the estimator (`estimation.shared_method` of both cards, so both revisions use one); default:
    the card's primary."""
    n = records.num_rows
    estimated = None
    if card.estimation:
        reference = EstimationReference.from_state_dict(card.estimation)
        method = method or reference.primary
        if n:
            probs = torch.from_numpy(list_matrix(records["probs"]))
            estimated = reference.estimate(probs)[method].estimate
    unfamiliar = records["unfamiliar"]
    n_known = n - unfamiliar.null_count
    share = float(pc.mean(unfamiliar.cast(pa.float64())).as_py()) if n_known else None
    counts = Counter(records["predicted_wnid"].to_pylist())
    return RevisionStats(
        name, model_sha256, revision, n, estimated, n_known, share, dict(sorted(counts.items())), serving,
        method if card.estimation else None,
    )  # fmt: skip


def class_shift(stable: dict[str, int], canary: dict[str, int]) -> tuple[float, float, float]:
    """(total-variation distance of the two class-share vectors, chi-squared statistic, its p-value).

    The chi-squared test of homogeneity runs on the 2 x C table of counts over the classes either predicted
    (`scipy.stats.chi2_contingency`, no continuity correction); one class only gives statistic 0, p 1.
    """
    from scipy.stats import chi2_contingency

    classes = sorted(set(stable) | set(canary))
    table = np.array([[stable.get(c, 0) for c in classes], [canary.get(c, 0) for c in classes]], float)
    shares = table / table.sum(axis=1, keepdims=True)
    tv = 0.5 * float(np.abs(shares[0] - shares[1]).sum())
    if len(classes) < 2:
        return tv, 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return tv, float(result.statistic), float(result.pvalue)


def _margin(tolerance: float, z: float, p: float, n_p: int, q: float, n_q: int) -> float:
    """`tolerance` plus `z` standard errors of the difference of two shares p (n_p trials) and q (n_q)."""
    return tolerance + z * math.sqrt(p * (1 - p) / n_p + q * (1 - q) / n_q)


def _share_check(
    name: str, label: str, stable: float | None, canary: float | None, n: tuple[int, int], tolerance: float,
    z: float, worse: Literal["lower", "higher"], missing: str,
) -> Check:  # fmt: skip
    """A share (a fraction) that must not get `worse` by more than `tolerance` plus `z` standard errors."""
    if stable is None or canary is None:
        return Check(name, None, stable, canary, f"not measured: {missing}")
    change = stable - canary if worse == "lower" else canary - stable
    bar = _margin(tolerance, z, stable, n[0], canary, n[1])
    word = "drop" if worse == "lower" else "rise"
    detail = f"{label} {canary:.2%} vs stable {stable:.2%}: {word} {change * 100:+.2f} pt, "
    detail += f"allowed {bar * 100:.2f} pt"
    return Check(name, change <= bar, stable, canary, detail)


def _model_checks(s: RevisionStats, c: RevisionStats, policy: CanaryPolicy) -> list[Check]:
    """Estimated top-1 (must not drop), unfamiliar share (must not rise), class-share shift."""
    accuracy = _share_check(
        "estimated_accuracy", "estimated top-1", s.estimated_accuracy, c.estimated_accuracy, (s.n, c.n),
        policy.accuracy_tolerance, policy.z, "lower", "a model card carries no estimation reference",
    )  # fmt: skip
    unfamiliar = _share_check(
        "unfamiliar_share", "unfamiliar share", s.unfamiliar_share, c.unfamiliar_share,
        (s.n_familiarity, c.n_familiarity), policy.unfamiliar_tolerance, policy.z, "higher",
        "a revision logged no familiarity (its card has no bank)",
    )  # fmt: skip
    tv, statistic, p_value = class_shift(s.class_counts, c.class_counts)
    shifted = tv > policy.max_shift and p_value < policy.alpha
    detail = (
        f"class shares differ by total variation {tv:.3f} (max {policy.max_shift:.3f}), "
        f"chi-squared {statistic:.2f}, p {p_value:.2g} (alpha {policy.alpha:g})"
    )
    return [accuracy, unfamiliar, Check("class_shift", not shifted, None, tv, detail)]


def _serving_checks(s: ServingMetrics | None, c: ServingMetrics | None, policy: CanaryPolicy) -> list[Check]:
    """5xx rate (must not rise by more than `max_error_increase`) and p95 latency (relative rise)."""
    if s is None or c is None or not c.requests or not s.requests:
        missing = (
            "pass both revisions' /metrics" if s is None or c is None else "a revision served no request"
        )
        return [
            Check(name, None, None, None, f"not measured: {missing}")
            for name in ("error_rate", "latency_p95")
        ]
    se, ce = s.error_rate or 0.0, c.error_rate or 0.0
    detail = (
        f"5xx rate {ce:.2%} ({c.errors_5xx}/{c.requests}) vs stable {se:.2%} ({s.errors_5xx}/{s.requests}), "
        f"allowed rise {policy.max_error_increase * 100:.2f} pt"
    )
    checks = [Check("error_rate", ce - se <= policy.max_error_increase, se, ce, detail)]
    sl, cl = s.latency_p95_s, c.latency_p95_s
    if sl is None or cl is None:
        return [*checks, Check("latency_p95", None, sl, cl, "not measured: no latency histogram")]
    bar = sl * (1 + policy.max_latency_increase)
    detail = (
        f"p95 latency {cl * 1000:.1f} ms vs stable {sl * 1000:.1f} ms, allowed {bar * 1000:.1f} ms "
        f"(+{policy.max_latency_increase:.0%})"
    )
    return [*checks, Check("latency_p95", cl <= bar + 1e-12, sl, cl, detail)]


def decide(
    stable: RevisionStats, canary: RevisionStats, policy: CanaryPolicy,
    window: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
) -> CanaryDecision:  # fmt: skip
    """Promote, roll back or hold (see the module docstring); the reason names every failed check."""
    enough = min(stable.n, canary.n) >= policy.min_records
    checks = _model_checks(stable, canary, policy) if enough else []
    checks += _serving_checks(stable.serving, canary.serving, policy)
    failed = [c for c in checks if c.passed is False]
    if failed:
        action: Action = "rollback"
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    elif not enough:
        action = "hold"
        reason = (
            f"too few records to judge the model: stable {stable.n}, canary {canary.n} in the window, "
            f"{policy.min_records} needed each (--min_records); let the canary bake longer"
        )
    else:
        action = "promote"
        measured = [c.name for c in checks if c.passed]
        reason = f"no worse than stable on {', '.join(measured)} over {canary.n} canary records"
    start, end = (None if t is None else t.isoformat() for t in window)
    return CanaryDecision(action, reason, checks, stable, canary, start, end, policy)


def format_table(decision: CanaryDecision) -> str:
    """A markdown table of both revisions side by side and each check's verdict (for a PR or job summary)."""
    s, c = decision.stable, decision.canary

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    def ms(metrics: ServingMetrics | None) -> str:
        return (
            "-"
            if metrics is None or metrics.latency_p95_s is None
            else f"{metrics.latency_p95_s * 1000:.1f} ms"
        )

    def errors(metrics: ServingMetrics | None) -> str:
        return "-" if metrics is None or metrics.error_rate is None else pct(metrics.error_rate)

    verdict = {True: "ok", False: "FAILED", None: "not measured"}
    lines = [
        "## Canary",
        "",
        f"**{decision.action.upper()}**: {decision.reason}.",
        "",
        f"Window: {decision.window_start or '-'} to {decision.window_end or '-'}",
        "",
        "| | stable | canary |",
        "| --- | ---: | ---: |",
        f"| model | `{s.model_sha256[:12]}` | `{c.model_sha256[:12]}` |",
        f"| revision | {s.revision or '-'} | {c.revision or '-'} |",
        f"| records | {s.n} | {c.n} |",
        f"| estimated top-1 ({c.estimation_method or s.estimation_method or '-'}) | {pct(s.estimated_accuracy)} | "
        f"{pct(c.estimated_accuracy)} |",
        f"| unfamiliar share | {pct(s.unfamiliar_share)} | {pct(c.unfamiliar_share)} |",
        f"| 5xx rate | {errors(s.serving)} | {errors(c.serving)} |",
        f"| p95 latency | {ms(s.serving)} | {ms(c.serving)} |",
        "",
        "| check | verdict | detail |",
        "| --- | --- | --- |",
        *(f"| {k.name} | {verdict[k.passed]} | {k.detail} |" for k in decision.checks),
    ]
    return "\n".join(lines) + "\n"
