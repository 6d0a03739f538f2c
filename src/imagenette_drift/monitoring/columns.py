"""Inference-log columns as arrays: the fp16 embedding bytes and the list<float> columns of one window."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def decode_embeddings(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Little-endian float16 embedding bytes (one binary value per row) -> ``(n, D)`` float16 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float16)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + n + 1]
    lengths = np.diff(offsets)
    if (lengths != lengths[0]).any() or lengths[0] % 2:
        raise ValueError("embeddings in one window have different byte lengths; were two models mixed?")
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view("<f2").reshape(n, lengths[0] // 2)


def list_matrix(column: pa.ChunkedArray | pa.Array, dtype: type = np.float32) -> np.ndarray:
    """A list<float> column of equal-length rows -> ``(n, k)`` array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    flat = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(dtype)  # a writable copy for torch
    return flat.reshape(n, -1) if n else flat.reshape(0, 0)
