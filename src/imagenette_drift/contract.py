"""The REST contract of `imagenette serve`: the `/predict`, `/drift` and `/info` answers, defined once.

The server publishes these models in its OpenAPI schema (`/docs`, `/openapi.json`); the app's REST client
parses answers with them and the app's in-process mode builds them, so both sides read the same fields.
This module imports pydantic only (no torch, no server stack): the Gradio Space ships it beside the app.
Unknown fields are ignored when parsing, so an older client keeps working when the server adds one. Error
answers (4xx/5xx) are `{"detail": "<what was wrong and how to fix it>"}`, FastAPI's own convention.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AccuracyEstimateAnswer",
    "AlertStatus",
    "CheckpointInfo",
    "ClassProbability",
    "ClassShare",
    "DriftExplanation",
    "DriftStatus",
    "FamiliarityAnswer",
    "ModelInfo",
    "MonitorStatus",
    "PredictionAnswer",
    "ServingInfo",
    "SignatureMatch",
    "WindowRow",
    "WitnessImage",
]

TOP_K = 5


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ClassProbability(_Answer):
    """One class and its softmax probability."""

    label: str = Field(description="class name, as in the checkpoint's model card")
    wnid: str = Field(description="the class's WordNet id (or folder name)")
    probability: float = Field(ge=0.0, le=1.0)


class FamiliarityAnswer(_Answer):
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


class PredictionAnswer(_Answer):
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


class AccuracyEstimateAnswer(_Answer):
    """A window's estimated top-1 accuracy (fraction) with an interval that includes binomial sampling error."""

    method: str
    estimate: float = Field(ge=0.0, le=1.0)
    lower: float = Field(ge=0.0, le=1.0)
    upper: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=1, description="images in the window")


class ClassShare(_Answer):
    """One class of a window: its predicted share against the held-out split's, and BBSE's true share."""

    label: str
    share: float = Field(ge=0.0, le=1.0, description="fraction of the window predicted as this class")
    reference_share: float = Field(ge=0.0, le=1.0, description="the same on the held-out split")
    residual: float = Field(description="Pearson chi-squared residual (observed - expected) / sqrt(expected)")
    bbse_share: float | None = Field(
        description="BBSE estimate of the true share (Lipton et al. 2018); null without a confusion matrix"
    )


class SignatureMatch(_Answer):
    """A corruption whose signature (shift of input statistics and mean embedding) resembles the window's."""

    corruption: str = Field(description="an ImageNet-C corruption name, e.g. fog")
    similarity: float = Field(ge=-1.0, le=1.0, description="mean cosine similarity of the two shift parts")


class WitnessImage(_Answer):
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


class DriftExplanation(_Answer):
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


class DriftStatus(_Answer):
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


class CheckpointInfo(_Answer):
    """Where the served checkpoint came from."""

    source: str = Field(description="the path or gs:// URI given to `imagenette serve`")
    sha256: str


class ServingInfo(_Answer):
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


class InferenceLogInfo(_Answer):
    """Whether and where this replica writes the inference log (`imagenette serve --log`)."""

    enabled: bool
    location: str | None = Field(description="a folder or gs:// prefix; null when logging is off")
    images: bool = Field(description="whether the original image bytes are logged (--log_images)")
    feedback: bool = Field(description="whether POST /feedback is on (a token is configured)")


class ModelInfo(_Answer):
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


# -- `imagenette monitor`: monitor_report.json and GET /status of `--follow` ----------------------------------
class WindowRow(_Answer):
    """One window of the fleet's traffic (columns of `windows.parquet`); p-values are null when not tested."""

    window: int = Field(description="sequential window number, over every run of this monitor")
    window_start: dt.datetime = Field(
        description="UTC start (time windows: interval start; count: first record)"
    )
    window_end: dt.datetime = Field(description="UTC end (time windows: interval end; count: last record)")
    n: int = Field(description="records in the window, from every replica")
    n_replicas: int = Field(description="replicas that served them")
    mmd_statistic: float | None = Field(description="unbiased MMD^2 of the embeddings against the reference")
    mmd_p_value: float | None = Field(description="permutation p-value of the MMD test")
    inputs_statistic: float | None = Field(description="largest KS distance of the input statistics")
    inputs_p_value: float | None = Field(description="Bonferroni KS p-value of the input statistics")
    label_shift_statistic: float | None = Field(description="chi-squared of the predicted-class histogram")
    label_shift_p_value: float | None = Field(description="p-value of the label-shift test")
    drift: bool = Field(description="a test's p-value is below alpha / number of tests")
    mean_confidence: float | None = Field(description="mean top-1 softmax probability")
    n_labelled: int = Field(description="records with a label posted to /feedback (any replica)")
    realized_accuracy: float | None = Field(description="top-1 accuracy on the labelled records")
    estimated_accuracy: float | None = Field(None, description="label-free accuracy estimate, else null")
    unfamiliar_share: float | None = Field(None, description="share of unfamiliar requests, else null")
    top_signature: str | None = Field(
        None, description="drifting windows: best-matching corruption, or 'no known signature'"
    )
    top_signature_similarity: float | None = Field(None, description="its similarity")
    top_moved_class: str | None = Field(None, description="class with the largest |chi-squared residual|")
    bbse_max_change: float | None = Field(
        None, description="largest |BBSE true share - held-out true share| over classes"
    )
    explanation: DriftExplanation | None = Field(
        None, description="drifting windows: the full explanation (windows.parquet keeps it as JSON text)"
    )

    @field_validator("explanation", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            return json.loads(value)
        return value


class AlertStatus(_Answer):
    """The alert's hysteresis state and its history."""

    active: bool
    drifting_run: int = Field(description="drifting windows in a row, ending with the latest")
    clean_run: int = Field(description="clean windows in a row, ending with the latest")
    raised_at: str | None = Field(description="window end of the last raised alert (UTC, ISO-8601)")
    raised_window: int | None
    suppressed: int = Field(description="alerts held back by the cool-down")
    history: list[dict] = Field(description="raised/cleared events, oldest first")
    alert_k: int
    clear_k: int
    cooldown_s: float


class MonitorStatus(_Answer):
    """Everything a monitor run knows: the window table, the alert and how the log was read."""

    log: str = Field(description="the log location read (a folder or gs:// prefix)")
    checkpoint_sha256: str
    window: str = Field(description="the window rule, e.g. '500 records' or '3600 s'")
    engine: str
    alpha: float
    updated_at: dt.datetime = Field(description="when this run finished (UTC)")
    windows: list[WindowRow]
    alert: AlertStatus
    pending_records: int = Field(description="records waiting for their window to close")
    late_records: int = Field(description="records that arrived after their window closed (not tested)")
    files_read: int = Field(description="prediction files read so far")
    files_read_this_run: int
    files_skipped: dict[str, str] = Field(description="file -> why it was skipped (foreign, truncated)")
    files_other_models: int = Field(description="prediction files of other checkpoints in the log (not read)")
    files_deleted: int = Field(0, description="files deleted by --log_retention_days in this run")
