"""The checkpoint contract: what a `.ckpt` carries besides weights, loading it safely for inference, and its
serving copy (`export_checkpoint`: weights and card, without the optimizer state).

A checkpoint written by `imagenette fit` holds, under `checkpoint["imagenette_drift"]`, a *model card*: the
timm model name, class names and wnids, the eval input size and normalisation, the training metrics, and
the drift reference (`None` until the drift callback stores one). Everything is plain tensors, numbers,
strings, lists and dicts, so `torch.load(weights_only=True)` can read it: loading never unpickles objects.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagenette_drift.card import CHECKPOINT_KEY, ModelCard
from imagenette_drift.errors import BadCheckpointError, MissingCheckpointError
from imagenette_drift.hashing import file_sha256
from imagenette_drift.io import atomic_path

STATE_PREFIX = "net."


@dataclass
class InferenceModel:
    """A network in eval mode with its card and eval transform, loaded from a checkpoint file alone."""

    net: nn.Module
    card: ModelCard
    sha256: str

    @property
    def transform(self):
        """The training eval transform (uint8 (3, H, W) in, uint8 (3, S, S) out)."""
        from imagenette_drift.data.images import build_eval_transform  # torchvision: only where images are

        return build_eval_transform(self.card.image_size)

    @torch.inference_mode()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, C) for a uint8 batch already passed through `transform`."""
        return self.embed_and_predict(images)[1]

    @torch.inference_mode()
    def embed_and_predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate embeddings (B, D) and softmax probabilities (B, C) from one forward pass."""
        features, logits = self.net.embed_and_logits(images, self.card.tta_flip)  # as it was evaluated
        return features, logits.softmax(dim=1)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(path, weights_only=True)` with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"Checkpoint {path} does not exist. Train one with `imagenette fit`.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # "Unsupported global" / "unsupported GLOBAL": a refused object
            raise BadCheckpointError(
                f"{path} is not a readable PyTorch checkpoint (corrupt or another format): {_first_line(e)}"
            ) from e
        raise BadCheckpointError(
            f"{path} holds objects that a weights-only load refuses to unpickle (it may be malicious, or not "
            f"written by imagenette-drift). Only load checkpoints from sources you trust. Detail: {_first_line(e)}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise BadCheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or another format): {_first_line(e)}"
        ) from e
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise BadCheckpointError(
            f"{path} is a PyTorch file but not an imagenette-drift checkpoint (no '{CHECKPOINT_KEY}' model card "
            "or 'state_dict'). Use a .ckpt written by `imagenette fit`."
        )
    return checkpoint


def _first_line(error: BaseException) -> str:
    """The informative line of an error message (torch's unpickling errors run to 20 lines): what follows
    torch's `WeightsUnpickler error:` when there is one (its advice to re-run with `weights_only=False` is left
    out: this project never loads a checkpoint that way), else the first non-empty line."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def load_for_inference(
    path: str | Path, map_location: str | torch.device = "cpu", channels_last: bool = True
) -> InferenceModel:
    """Build the network described by a checkpoint's model card and load its weights, in eval mode."""
    # timm (and torchvision) load here, not at import: a process that only reads cards stays light.
    from imagenette_drift.models.net import ImagenetteNet

    checkpoint = read_checkpoint(path, map_location)
    card = ModelCard.from_dict(checkpoint[CHECKPOINT_KEY])
    net = ImagenetteNet(
        card.model_name,
        card.num_classes,
        pretrained=False,
        channels_last=channels_last,
        mean=card.mean,
        std=card.std,
        **card.timm_kwargs,
    )
    state = {
        k.removeprefix(STATE_PREFIX): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(STATE_PREFIX)
    }
    net.load_state_dict(state)
    net.to(map_location).eval()
    return InferenceModel(net=net, card=card, sha256=file_sha256(path))


# What a serving copy keeps: the weights and the card, plus what Lightning reads to test or predict from it.
KEPT_KEYS = (
    CHECKPOINT_KEY,
    "state_dict",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "hyper_parameters",
    "hparams_name",
)


def export_checkpoint(source: str | Path, dest: str | Path) -> dict[str, int | str]:
    """Write the serving copy of `source` to `dest` atomically; return sizes and the new file's sha256.

    The copy is loaded back (`weights_only`, the network built from its card) before it replaces `dest`, so a
    failed export never leaves a half-written or unusable file behind.
    """
    source, dest = Path(source), Path(dest)
    if source.resolve() == dest.resolve():
        raise ValueError(f"--output {dest} is the checkpoint itself; write the export to another path.")
    checkpoint = read_checkpoint(source)
    slim = {key: checkpoint[key] for key in KEPT_KEYS if key in checkpoint}
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:  # a file object: the archive's inner name is fixed, not the temp file's,
            torch.save(slim, f)  # so the same checkpoint always exports to the same bytes (and sha256)
        loaded = load_for_inference(tmp)  # the copy must load as the server will load it (and is hashed so)
    return {
        "source_bytes": source.stat().st_size,
        "output_bytes": dest.stat().st_size,
        "sha256": loaded.sha256,
    }
