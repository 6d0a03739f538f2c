"""The server's drift hub: `/drift` counts every image of the requests already answered, by waiting on state."""

from __future__ import annotations

import numpy as np

from imagenette_drift.serve.metrics import ServerMetrics
from imagenette_drift.serve.monitor import DriftHub, EventChannel


def test_status_waits_until_published_images_are_consumed() -> None:
    channel = EventChannel()
    hub = DriftHub(None, channel, ServerMetrics())  # no reference: the hub still counts what it consumes
    assert hub.status(wait_s=0).images_seen == 0
    for size in (3, 5, 2):  # what inference workers publish after each forward pass
        channel.publish(np.zeros((size, 8), dtype=np.float32))
    assert hub.wait_consumed(timeout=30)
    status = hub.status(wait_s=0)
    assert status.images_seen == 10 and status.enabled is False and "no drift reference" in status.reason
    channel.publish(np.zeros((4, 8), dtype=np.float32))
    assert hub.status(wait_s=30).images_seen == 14  # status waits on the same condition
