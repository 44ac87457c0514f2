"""The start-up heap of every process of a replica, frozen out of the garbage collector's sight."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the garbage collector's sight.

    A full collection scans every tracked object; after a model or botocore's service models
    are loaded that takes long enough to stall the event loop, and every frame in flight waits
    it out. Frozen objects are never scanned; what the start-up heap holds lives as long as the process.
    """
    gc.collect()
    gc.freeze()
