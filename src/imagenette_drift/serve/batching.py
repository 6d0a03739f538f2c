"""Greedy dynamic batching: never make a lone request wait for company, batch whatever is already queued.

LitServe's `BatchedLoop` waits `batch_timeout` for every batch to fill, so at low load each request pays the
full timeout. This loop takes the first request as soon as it arrives and drains whatever else is queued;
only when others were already waiting (there is concurrency) does it wait up to `batch_timeout` for more.
Under load, requests queue up while the model runs, so batches fill by themselves.
"""

from __future__ import annotations

import time
from queue import Empty, Queue

from litserve import LitAPI
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

from imagenette_drift.serve.litserve_adapter import STOP_SENTINEL, StopLoopError

IDLE_POLL_S = 1.0


class GreedyBatchedLoop(BatchedLoop):
    """`BatchedLoop` with the greedy collection policy described in the module docstring."""

    def get_batch_requests(
        self, lit_api: LitAPI, request_queue: Queue, transport: MessageTransport
    ) -> tuple[list, list]:
        payloads: list = []
        timed_out: list = []
        try:
            self._accept(request_queue.get(timeout=IDLE_POLL_S), lit_api, transport, payloads, timed_out)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            try:
                item = request_queue.get_nowait()
            except Empty:
                remaining = deadline - time.monotonic()
                if len(payloads) < 2 or remaining <= 0:
                    break  # alone, or waited long enough: run what we have
                try:
                    item = request_queue.get(timeout=remaining)
                except Empty:
                    break
            self._accept(item, lit_api, transport, payloads, timed_out)
        return payloads, timed_out

    def _accept(
        self, item, lit_api: LitAPI, transport: MessageTransport, payloads: list, timed_out: list
    ) -> None:
        """Add one queued request to the batch, or to the timed-out list when it waited too long."""
        if item == STOP_SENTINEL:
            raise StopLoopError()
        response_queue_id, uid, timestamp, x_enc = item
        self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
        expired = lit_api.request_timeout not in (-1, False, None) and (
            time.monotonic() - timestamp > lit_api.request_timeout
        )
        (timed_out if expired else payloads).append(
            (response_queue_id, uid) if expired else (response_queue_id, uid, x_enc)
        )
