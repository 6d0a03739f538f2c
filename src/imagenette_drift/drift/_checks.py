"""Input validation shared by the drift detectors: fail early with messages that say how to fix it."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def as_tensor(name: str, x: ArrayLike) -> Tensor:
    """Return ``x`` as a tensor, accepting numpy arrays; raise ``TypeError`` for anything else."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")


def check_matrix(name: str, x: ArrayLike, min_rows: int = 2, n_features: int | None = None) -> Tensor:
    """Validate a 2-D ``(n_samples, n_features)`` float matrix of finite values and return it as a tensor."""
    x = as_tensor(name, x)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D with shape (n_samples, n_features), got shape {tuple(x.shape)}. "
            "Stack samples along the first dimension (use x.unsqueeze(0) for a single sample)."
        )
    if x.shape[0] < min_rows:
        raise ValueError(f"`{name}` needs at least {min_rows} rows (samples), got {x.shape[0]}.")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(
            f"`{name}` has {x.shape[1]} features but the reference has {n_features}; "
            "pass features from the same model and layer as the reference."
        )
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if x.is_floating_point():
        n_bad = int((~torch.isfinite(x)).sum())
        if n_bad:
            raise ValueError(
                f"`{name}` contains {n_bad} NaN or infinite values; drop or fix those samples before testing."
            )
    return x


def check_probability(name: str, value: float) -> float:
    """Validate a significance level / probability in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a float in (0, 1), got {value!r}; a common choice is 0.05.")
    return float(value)


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer argument that must be at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_bandwidth(value: float | None) -> float | None:
    """Validate a kernel bandwidth: a positive number, or ``None`` for the median heuristic."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`bandwidth` must be a positive float or None (median heuristic), got {value!r}.")
    return float(value)


def compute_dtype(x: Tensor) -> torch.dtype:
    """Float dtype used for kernel arithmetic: float64 stays float64, everything else runs in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_state(state: dict, expected_format: str, keys: tuple[str, ...]) -> None:
    """Check that ``state`` is a state dict written by ``expected_format`` and holds ``keys``."""
    if not isinstance(state, dict):
        raise TypeError(f"`state` must be a dict from `state_dict()`, got {type(state).__name__}.")
    found = state.get("format")
    if found != expected_format:
        raise ValueError(
            f"`state` has format {found!r} but {expected_format!r} was expected; load it with the class "
            "that wrote it, or use `imagenette_drift.drift.detector_from_state_dict`."
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"`state` for {expected_format} is missing keys {missing}; re-save it with state_dict()."
        )
