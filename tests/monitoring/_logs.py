"""Write inference-log files in the v1 schema from REAL model outputs (until the server's writer lands).

Each record is what a replica would log for one image: the model's embedding (fp16), softmax outputs and the
input statistics of the transformed image, exactly as `imagenette drift` computes them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.embedding import embed_folder
from imagenette_drift.inference_log.schema import (
    LABEL_SCHEMA,
    PREDICTION_SCHEMA,
    file_name,
    partition_dir,
)


@dataclass
class Outputs:
    """Real model outputs for a list of images: embeddings (n, D), probs (n, C), stats (n, 12), true wnids."""

    embeddings: torch.Tensor
    probs: torch.Tensor
    stats: torch.Tensor
    wnids: list[str]


def model_outputs(
    model: InferenceModel, paths: Sequence[Path], corruption: str | None = None, severity: int = 5
) -> Outputs:
    embeddings, probs, stats = embed_folder(model, list(paths), corruption, severity, batch_size=20)
    return Outputs(embeddings, probs, stats, [p.parent.name for p in paths])


def prediction_table(
    outputs: Outputs,
    model: InferenceModel,
    timestamps: Sequence[dt.datetime],
    replica: str,
    request_ids: Sequence[str] | None = None,
) -> pa.Table:
    n = len(outputs.wnids)
    wnids = model.card.wnids
    top = outputs.probs.argmax(dim=1)
    columns = {
        "request_id": list(request_ids) if request_ids is not None else [str(uuid.uuid4()) for _ in range(n)],
        "timestamp": list(timestamps),
        "model_sha256": [model.sha256] * n,
        "replica_id": [replica] * n,
        "runtime": ["torch"] * n,
        "predicted_wnid": [wnids[int(i)] for i in top],
        "confidence": outputs.probs.max(dim=1).values.tolist(),
        "probs": outputs.probs.tolist(),
        "embedding": [row.astype("<f2").tobytes() for row in outputs.embeddings.float().numpy()],
        "image_stats": outputs.stats.tolist(),
        "width": [160] * n,
        "height": [160] * n,
        "format": ["JPEG"] * n,
        "n_bytes": [5000] * n,
        "latency_ms": [3.0] * n,
        "knn_distance": [None] * n,
        "energy": [None] * n,
        "unfamiliar": [None] * n,
        "image": [None] * n,
    }
    return pa.Table.from_pydict(columns, schema=PREDICTION_SCHEMA)


def write_predictions(root: Path, table: pa.Table) -> Path:
    """Publish one file the way a replica does: hive partition, unique name, temp file then rename."""
    first = table["timestamp"][0].as_py()
    folder = root / partition_dir("predictions", first.date(), table["model_sha256"][0].as_py())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(table["replica_id"][0].as_py(), first)
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.rename(path)
    return path


def write_labels(
    root: Path, request_ids: Sequence[str], wnids: Sequence[str], at: dt.datetime, replica: str
) -> Path:
    table = pa.Table.from_pydict(
        {
            "request_id": list(request_ids),
            "timestamp": [at] * len(request_ids),
            "label_wnid": list(wnids),
            "replica_id": [replica] * len(request_ids),
        },
        schema=LABEL_SCHEMA,
    )
    folder = root / partition_dir("labels", at.date())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(replica, at)
    pq.write_table(table, path)
    return path


def spread_over_replicas(
    root: Path,
    model: InferenceModel,
    outputs: Outputs,
    start: dt.datetime,
    step: dt.timedelta,
    replicas: Sequence[str] = ("rev1-a", "rev1-b", "rev1-c"),
    records_per_file: int = 5,
    seed: int = 0,
) -> list[str]:
    """Serve `outputs` round-robin over `replicas` (one record every `step`), each replica flushing a file
    every `records_per_file` records; return the request ids in serving order."""
    n = len(outputs.wnids)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    # Traffic arrives in a random (seeded) order of the images, not class by class.
    slot = np.random.default_rng(seed).permutation(n)
    times = [start + int(slot[i]) * step for i in range(n)]
    for r, replica in enumerate(replicas):
        mine = np.argsort(slot)[r :: len(replicas)]
        for first in range(0, len(mine), records_per_file):
            rows = mine[first : first + records_per_file]
            part = Outputs(
                outputs.embeddings[rows],
                outputs.probs[rows],
                outputs.stats[rows],
                [outputs.wnids[i] for i in rows],
            )
            write_predictions(
                root, prediction_table(part, model, [times[i] for i in rows], replica, [ids[i] for i in rows])
            )
    return ids
