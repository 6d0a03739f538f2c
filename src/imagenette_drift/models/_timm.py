"""timm, imported without the W&B client that timm loads as a side effect.

timm (1.0.x) runs `try: import wandb` in `timm.utils.summary` at import time, for its own training scripts'
`update_summary(log_wandb=True)`, which this project never calls. With wandb installed (the training extra),
that would load the whole W&B client into every inference process (about 2 s and 20 MB on a 2-core machine).
While timm is imported for the first time, `wandb` is marked absent in `sys.modules`, so that try-import fails
as if wandb were not installed; the mark is removed right after, so `import wandb` elsewhere (Lightning's
`WandbLogger` in training) imports it normally.
"""

from __future__ import annotations

import sys

if "timm" not in sys.modules and "wandb" not in sys.modules:
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError meanwhile
    try:
        import timm
    finally:
        if sys.modules.get("wandb", ...) is None:
            del sys.modules["wandb"]
else:
    import timm

__all__ = ["timm"]
