"""The REST contract of `imagenette serve`: the `/predict`, `/drift` and `/info` answers, defined once.

The server publishes these models in its OpenAPI schema (`/docs`, `/openapi.json`); the app's REST client
parses answers with them and the app's in-process mode builds them, so both sides read the same fields.
This module imports pydantic only (no torch, no server stack): the Gradio Space ships it beside the app, with
the monitor's `monitor_contract` that builds on it.
Unknown fields are ignored when parsing, so an older client keeps working when the server adds one. Error
answers (4xx/5xx) are `{"detail": "<what was wrong and how to fix it>"}`, FastAPI's own convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccuracyEstimateAnswer",
    "Answer",
    "CheckpointInfo",
    "ClassProbability",
    "ClassShare",
    "DriftExplanation",
    "DriftStatus",
    "FamiliarityAnswer",
    "ModelInfo",
    "PredictionAnswer",
    "ServingInfo",
    "SignatureMatch",
    "WitnessImage",
]

TOP_K = 5


class Answer(BaseModel):
    """The base of every answer: frozen, and unknown fields are ignored so older clients keep working."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ClassProbability(Answer):
    """One class and its softmax probability."""

    label: str = Field(description="class name, as in the checkpoint's model card")
    wnid: str = Field(description="the class's WordNet id (or folder name)")
    probability: float = Field(ge=0.0, le=1.0)


class FamiliarityAnswer(Answer):
    """How familiar one image is to the model, against the reference bank in the checkpoint's card."""

    knn_distance: float = Field(
        ge=0.0,
        description="distance of the L2-normalised embedding to its k-th nearest held-out embedding "
        "(Sun et al. 2022); higher is less familiar",
    )
    energy: float | None = Field(
        description="energy score -logsumexp(logits) (Liu et al. 2020); higher is less familiar; null when the "
        "model's head is not linear"
    )
    unfamiliar: bool = Field(description="past the threshold that 95% of held-out images stay under")


class PredictionAnswer(Answer):
    """`POST /predict`: the most likely class and the top-k classes, most likely first."""

    label: str
    wnid: str
    confidence: float = Field(ge=0.0, le=1.0, description="softmax probability of `label`")
    top_k: list[ClassProbability]
    request_id: str | None = Field(
        default=None, description="this request's id (also the X-Request-ID header); POST it to /feedback"
    )
    familiarity: FamiliarityAnswer | None = Field(
        default=None, description="k-NN distance and energy of the image; null when the card has no bank"
    )

    @classmethod
    def from_probs(
        cls,
        probs: Sequence[float],
        class_names: Sequence[str],
        wnids: Sequence[str],
        k: int = TOP_K,
    ) -> PredictionAnswer:
        """Build the answer from one image's probabilities (C,), ties broken by class index."""
        order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))[: min(k, len(probs))]
        top = [
            ClassProbability(label=class_names[i], wnid=wnids[i], probability=float(probs[i])) for i in order
        ]
        return cls(label=top[0].label, wnid=top[0].wnid, confidence=top[0].probability, top_k=top)


class AccuracyEstimateAnswer(Answer):
    """A window's estimated top-1 accuracy (fraction) with an interval that includes binomial sampling error."""

    method: str
    estimate: float = Field(ge=0.0, le=1.0)
    lower: float = Field(ge=0.0, le=1.0)
    upper: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=1, description="images in the window")


class ClassShare(Answer):
    """One class of a window: its predicted share against the held-out split's, and BBSE's true share."""

    label: str
    share: float = Field(ge=0.0, le=1.0, description="fraction of the window predicted as this class")
    reference_share: float = Field(ge=0.0, le=1.0, description="the same on the held-out split")
    residual: float = Field(description="Pearson chi-squared residual (observed - expected) / sqrt(expected)")
    bbse_share: float | None = Field(
        description="BBSE estimate of the true share (Lipton et al. 2018); null without a confusion matrix"
    )


class SignatureMatch(Answer):
    """A corruption whose signature (shift of input statistics and mean embedding) resembles the window's."""

    corruption: str = Field(description="an ImageNet-C corruption name, e.g. fog")
    similarity: float = Field(ge=-1.0, le=1.0, description="mean cosine similarity of the two shift parts")


class WitnessImage(Answer):
    """One of the window's images with the largest MMD witness value (the images that drive the drift)."""

    witness: float = Field(
        description="MMD witness value (Gretton et al. 2012); larger drives the drift more"
    )
    image: int | None = Field(
        default=None, description="the server: 1-based number of the image since start; else its index"
    )
    request_id: str | None = Field(default=None, description="the logged request (monitor)")
    path: str | None = Field(default=None, description="the image file, when known (`imagenette drift`)")
    nearest_reference_path: str | None = Field(
        default=None, description="its nearest held-out image, relative to the training data root"
    )
    thumbnail: str | None = Field(default=None, description="thumbnail file, relative to the report")
    nearest_thumbnail: str | None = Field(default=None, description="thumbnail of the nearest reference")


class DriftExplanation(Answer):
    """Why a window drifts: which classes moved, what the shift looks like, which images drive it."""

    classes: list[ClassShare] = Field(description="every class, in the card's class order")
    moved_classes: list[str] = Field(
        description="classes whose |residual| passes the threshold, largest first"
    )
    signatures: list[SignatureMatch] = Field(
        description="the top 3 corruption signatures; empty when no input-statistics shift was tested"
    )
    looks_like: list[str] | str = Field(
        description="the top signatures' names, or 'no known signature' when the best similarity is below 0.6"
    )
    witnesses: list[WitnessImage] = Field(default_factory=list)


class DriftStatus(Answer):
    """`GET /drift`: the online drift monitor's latest window (MMD^2 against the training reference)."""

    enabled: bool = Field(description="False when the checkpoint carries no online reference (see `reason`)")
    images_seen: int = Field(ge=0, description="images fed to the monitor since the server started")
    window_size: int | None = Field(description="images per sliding window; null when disabled")
    window_filled: bool = Field(
        description="whether a full window exists yet (only then is there a statistic)"
    )
    statistic: float | None = Field(description="MMD^2 of the latest full window; null until filled")
    threshold: float | None = Field(
        description="calibrated alarm threshold of that window; null until filled"
    )
    drifting: bool = Field(description="statistic > threshold for the latest window")
    drifting_since: int | None = Field(description="1-based image index where the current drifting run began")
    reason: str | None = Field(default=None, description="why monitoring is disabled; null when enabled")
    accuracy: dict[str, AccuracyEstimateAnswer] | None = Field(
        default=None,
        description="label-free top-1 estimates of the latest window of the reference's window size, by method "
        "(atc_mc, atc_ne, ac, doc, and cot, cott, nuclear on cards that store the held-out class shares); null "
        "without an estimation reference or before the first image",
    )
    estimate_method: str | None = Field(
        default=None,
        description="the estimate the harm alert (and the app) reads: cot, or atc_mc on older cards; null "
        "without an estimation reference",
    )
    estimate_note: str | None = Field(
        default=None, description="why `estimate_method` is a fallback (an older card); null otherwise"
    )
    heldout_accuracy: float | None = Field(default=None, description="top-1 on the held-out split")
    harm: bool | None = Field(
        default=None,
        description="the `estimate_method` estimate stayed more than the configured points below held-out for "
        "the configured consecutive full windows",
    )
    explanation: DriftExplanation | None = Field(
        default=None,
        description="while drifting: the class shift, corruption signatures and witness images of the same "
        "latest window; null otherwise or without an explanation reference in the card",
    )

    @classmethod
    def disabled(cls, reason: str, images_seen: int = 0) -> DriftStatus:
        """The answer when no monitor runs."""
        return cls(
            enabled=False,
            images_seen=images_seen,
            window_size=None,
            window_filled=False,
            statistic=None,
            threshold=None,
            drifting=False,
            drifting_since=None,
            reason=reason,
        )


class CheckpointInfo(Answer):
    """Where the served checkpoint came from."""

    source: str = Field(description="the path or gs:// URI given to `imagenette serve`")
    sha256: str


class ServingInfo(Answer):
    """How the server runs the model (the `imagenette serve` flags in effect)."""

    runtime: Literal["torch", "bf16", "onnx", "cuda"]
    runtime_reason: str = Field(
        description="why this runtime: chosen by --runtime, or what --runtime auto found"
    )
    tta_flip: bool
    workers: int
    threads_per_worker: int
    max_batch_size: int
    batch_timeout: float = Field(description="seconds")
    max_bytes: int
    max_pixels: int


class InferenceLogInfo(Answer):
    """Whether and where this replica writes the inference log (`imagenette serve --log`)."""

    enabled: bool
    location: str | None = Field(description="a folder or gs:// prefix; null when logging is off")
    images: bool = Field(description="whether the original image bytes are logged (--log_images)")
    feedback: bool = Field(description="whether POST /feedback is on (a token is configured)")


class ModelInfo(Answer):
    """`GET /info`: what model this is, where it came from, and how it was trained and is served."""

    model_name: str = Field(description="timm model name")
    class_names: list[str]
    wnids: list[str]
    num_classes: int
    input_size: int = Field(description="eval image side in pixels")
    mean: list[float]
    std: list[float]
    checkpoint: CheckpointInfo
    metrics: dict[str, float] = Field(description="the training metrics stored in the model card")
    drift_reference: bool = Field(description="whether the checkpoint carries a drift reference")
    serving: ServingInfo
    inference_log: InferenceLogInfo
