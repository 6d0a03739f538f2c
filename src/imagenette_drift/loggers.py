"""Loggers with defaults that suit this project: W&B that goes offline by itself without an API key."""

from __future__ import annotations

import os
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """Lightning's `WandbLogger`, offline unless a W&B API key is available.

    With `offline=None` the run is offline when `WANDB_API_KEY` is unset or `WANDB_MODE` is `offline`/
    `disabled`; sync an offline run later with `wandb sync <dir>`. Checkpoints are uploaded as artifacts
    (the best one tagged `best`) only when online, since W&B cannot log models offline.
    """

    def __init__(
        self,
        project: str = "imagenette-drift",
        save_dir: str = "outputs",
        name: str | None = None,
        offline: bool | None = None,
        log_model: bool | Literal["all"] | None = None,
        **kwargs: Any,
    ) -> None:
        """Args:
        project: W&B project name.
        save_dir: folder for the local run files (`<save_dir>/wandb/...`).
        name: display name of the run.
        offline: force offline (True) or online (False); None decides from the environment.
        log_model: upload checkpoints as artifacts; None means "when online".
        """
        if offline is None:
            offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in (
                "offline",
                "disabled",
            )
        if log_model is None:
            log_model = not offline
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project, save_dir=save_dir, name=name, offline=offline, log_model=log_model, **kwargs
        )
