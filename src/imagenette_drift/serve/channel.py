"""The queue from inference workers to the API-server process: each batch's embeddings and an image count.

Kept apart from the drift hub (`serve/monitor.py`) so that an inference worker, which only publishes, never
imports the drift statistics.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np


class EventChannel:
    """What an inference worker needs to publish batches: a queue and a count of images sent.

    Created in the main process before the workers start; picklable into spawned workers.
    """

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.sent = ctx.Value("q", 0)

    def publish(
        self, features: np.ndarray, probs: np.ndarray | None = None, stats: np.ndarray | None = None
    ) -> None:
        """Called by a worker after each forward pass, before it answers the requests: (B, D) embeddings,
        (B, C) softmax rows and (B, 12) input statistics (None when nothing needs them)."""
        with self.sent.get_lock():
            self.sent.value += len(features)
        self.queue.put((features, probs, stats))
