"""The network itself: input normalisation plus a timm backbone, shared by training and inference."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imagenette_drift.models._timm import timm


def create_backbone(model_name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model`, with errors that say what to do when the name or the pretrained weights are wrong.

    Layer kwargs given by name in YAML (`aa_layer: blurpool`) are resolved to timm's layer classes. Pretrained
    weights come from the Hugging Face Hub or its local cache (`HF_HOME`); with `HF_HUB_OFFLINE=1`,
    huggingface_hub reads the cache only, so a machine without network fails at once instead of retrying.

    Raises:
        ValueError: `model_name` is not a timm model, or `aa_layer` is not a known name.
        RuntimeError: `pretrained=True` and the weights are neither downloadable nor cached.
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
    try:
        return timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except OSError as e:  # huggingface_hub's download, offline-mode and cache-miss errors are all OSErrors
        if not pretrained:
            raise
        raise RuntimeError(
            f"pretrained=True needs the weights of {model_name!r} from the Hugging Face Hub or its local cache "
            f"(HF_HOME), and neither has them ({type(e).__name__}). Connect to the internet, pre-download them "
            "into the HF_HOME cache, or set --model.pretrained=false to train from scratch. Without network, "
            "set HF_HUB_OFFLINE=1 so that only the cache is tried."
        ) from e


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
