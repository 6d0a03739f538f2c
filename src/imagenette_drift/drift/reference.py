"""The drift reference stored in a checkpoint: fitted detectors on held-out embeddings and softmax outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from imagenette_drift.card import check_field_version
from imagenette_drift.drift.mmd import MMDDriftDetector
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.drift.univariate import ChiSquaredDriftDetector, KSDriftDetector

REFERENCE_VERSION = 1


@dataclass(frozen=True)
class ReferenceSettings:
    """How a drift reference is fitted: the window it tests, and the size and calibration of its detectors.

    The one definition of these arguments: `DriftReference.fit` takes it, and so does the `DriftCallback` (as
    `reference:` in a config's `init_args`).

    Args:
        window_size: Images per tested window (and the online monitor's window, capped by the reference size).
        max_reference: Most held-out images kept in the reference (seeded subsample).
        n_permutations: Permutations of the MMD test.
        alpha: Significance level of the window tests.
        expected_run_time: Mean full-window updates between false alarms of the online monitor.
        n_bootstrap: Simulated streams used to calibrate the online monitor.
        seed: Seed of subsampling, permutations and calibration (the DriftCallback's familiarity bank and
            window shuffling too).
    """

    window_size: int = 200
    max_reference: int = 1000
    n_permutations: int = 100
    alpha: float = 0.05
    expected_run_time: int = 1000
    n_bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {self.window_size}.")


@dataclass
class DriftReference:
    """The detectors fitted on in-distribution data, as the checkpoint carries them.

    `mmd` tests embeddings (covariate shift), `ks` the softmax outputs per class (black-box shift
    detection), `chi2` the predicted-label histogram (label shift), `inputs` per-image statistics of the
    pixels (see `image_stats`: shifts the embeddings ignore, like JPEG artifacts), and `online` is the
    streaming monitor the server feeds one image at a time (None when the reference is too small for its
    window).
    """

    mmd: MMDDriftDetector
    ks: KSDriftDetector
    chi2: ChiSquaredDriftDetector
    inputs: KSDriftDetector | None
    online: OnlineDriftMonitor | None
    window_size: int
    n_reference: int

    @classmethod
    def fit(
        cls,
        embeddings: Tensor,
        probs: Tensor,
        image_stats: Tensor | None = None,
        settings: ReferenceSettings = ReferenceSettings(),
    ) -> DriftReference:
        """Subsample up to `settings.max_reference` rows (seeded) and fit every detector on them."""
        window_size, max_reference, alpha, seed = (
            settings.window_size, settings.max_reference, settings.alpha, settings.seed
        )  # fmt: skip
        if len(embeddings) != len(probs):
            raise ValueError(
                f"Got {len(embeddings)} embeddings but {len(probs)} softmax rows; they must match."
            )
        if len(embeddings) < 2:
            raise ValueError(
                f"A drift reference needs at least 2 held-out images, got {len(embeddings)}; "
                "raise --data.val_fraction."
            )
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(embeddings), generator=generator)[:max_reference]
        emb = embeddings[keep].detach().float().cpu()
        prob = probs[keep].detach().float().cpu()
        inputs = (
            None if image_stats is None else KSDriftDetector(image_stats[keep].detach().float().cpu(), alpha)
        )
        online = None
        online_window = min(window_size, (len(emb) + 1) // 3)
        if online_window >= 2:
            online = OnlineDriftMonitor(
                emb.half(),
                window_size=online_window,
                expected_run_time=settings.expected_run_time,
                n_bootstrap=max(settings.n_bootstrap, settings.expected_run_time),
                max_reference=max_reference,
                seed=seed,
            )
        return cls(
            mmd=MMDDriftDetector(emb.half(), n_permutations=settings.n_permutations, alpha=alpha, seed=seed),
            ks=KSDriftDetector(prob.half(), alpha=alpha),
            chi2=ChiSquaredDriftDetector(prob, num_classes=prob.shape[1], alpha=alpha),
            inputs=inputs,
            online=online,
            window_size=window_size,
            n_reference=len(emb),
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers only, for `torch.load(weights_only=True)`."""
        return {
            "version": REFERENCE_VERSION,
            "window_size": self.window_size,
            "n_reference": self.n_reference,
            "mmd": self.mmd.state_dict(),
            "ks": self.ks.state_dict(),
            "chi2": self.chi2.state_dict(),
            "inputs": None if self.inputs is None else self.inputs.state_dict(),
            "online": None if self.online is None else self.online.state_dict(),
        }

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], device: torch.device | str | None = None
    ) -> DriftReference:
        check_field_version(state, "Drift", {REFERENCE_VERSION})
        online, inputs = state.get("online"), state.get("inputs")
        return cls(
            mmd=MMDDriftDetector.from_state_dict(state["mmd"], device=device),
            ks=KSDriftDetector.from_state_dict(state["ks"]),
            chi2=ChiSquaredDriftDetector.from_state_dict(state["chi2"]),
            inputs=None if inputs is None else KSDriftDetector.from_state_dict(inputs),
            online=None if online is None else OnlineDriftMonitor.from_state_dict(online, device=device),
            window_size=int(state["window_size"]),
            n_reference=int(state["n_reference"]),
        )
