"""The network itself: input normalisation plus a timm backbone, shared by training and inference."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import timm
import torch
from torch import nn


def create_backbone(model_name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model` that fails fast, with a clear message, when pretrained weights can't be fetched.

    Layer kwargs given by name in YAML (`aa_layer: blurpool`) are resolved to timm's layer classes.
    """
    if isinstance(kwargs.get("aa_layer"), str):
        layers = {"blurpool": timm.layers.BlurPool2d, "avgpool": nn.AvgPool2d}
        if kwargs["aa_layer"] not in layers:
            raise ValueError(f"aa_layer must be one of {sorted(layers)}, got {kwargs['aa_layer']!r}.")
        kwargs["aa_layer"] = layers[kwargs["aa_layer"]]
    if model_name not in timm.list_models() and not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:6]}*")[:10]
        raise ValueError(
            f"Unknown timm model {model_name!r}. Similar names: {close}. See timm.list_models()."
        )
    if pretrained and not _hub_reachable():
        # Without network, huggingface_hub retries for about a minute before giving up: try the local
        # cache only, and turn a miss into an error that says what to do.
        try:
            with _offline_hub():
                return timm.create_model(model_name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as e:
            raise RuntimeError(
                f"pretrained=True needs the weights of {model_name!r} from the Hugging Face Hub, which is not "
                "reachable and they are not in the local cache. Connect to the internet, pre-download them "
                "(HF_HOME cache), or set --model.pretrained=false to train from scratch."
            ) from e
    return timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


class _offline_hub:
    """Context manager that puts huggingface_hub in offline mode for one call."""

    def __enter__(self) -> None:
        from huggingface_hub import constants

        self._previous = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True

    def __exit__(self, *exc: object) -> None:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = self._previous


class ImagenetteNet(nn.Module):
    """Normalise uint8 (or [0, 1] float) RGB batches, then run a timm classifier.

    `forward` returns logits, `embed` the penultimate (pre-logits) features, and `head` maps those features
    to logits, so drift monitoring can reuse one forward pass. Inputs may be uint8 0-255 or float in [0, 1].
    Mean and std default to the backbone's own (timm's `resolve_model_data_config`).
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        pretrained: bool = False,
        channels_last: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(model_name, num_classes, pretrained, **timm_kwargs)
        self.data_config = timm.data.resolve_model_data_config(self.backbone)
        self.mean_values = tuple(float(v) for v in (self.data_config["mean"] if mean is None else mean))
        self.std_values = tuple(float(v) for v in (self.data_config["std"] if std is None else std))
        self.register_buffer(
            "mean", torch.tensor(self.mean_values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(self.std_values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.channels_last = channels_last
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 0-255 or float 0-1 images -> normalised float, channels_last if enabled."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D): the input of the classifier head."""
        return self.backbone.forward_head(
            self.backbone.forward_features(self.normalize(images)), pre_logits=True
        )

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from penultimate features."""
        return self.backbone.get_classifier()(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))

    def embed_and_logits(
        self, images: torch.Tensor, tta_flip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and float logits from one pass; `tta_flip` averages the logits with the mirror image's."""
        features = self.embed(images)
        logits = self.head(features).float()
        if tta_flip:
            logits = (logits + self(images.flip(-1)).float()) / 2
        return features.float(), logits
