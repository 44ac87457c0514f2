"""Where the servers keep their data: in memory when it has room, else in the state dir."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

# In memory when it has room: a local stack is disposable, and on disk the file system's journal
# commits stall Kafka's appends after each burst of S3 uploads.
MEMORY_ROOT = Path("/dev/shm")  # noqa: S108 - a folder of our own in it, removed on down
MEMORY_MIN_FREE_BYTES = 2 * 2**30


def _free_bytes(root: Path) -> int | None:
    """Free bytes of a writable folder; None when there is no such folder or it cannot be written."""
    if not root.is_dir() or not os.access(root, os.W_OK):
        return None
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def data_dir_for(state_dir: Path, memory_root: Path = MEMORY_ROOT, min_free: int = MEMORY_MIN_FREE_BYTES) -> Path:
    """In memory (one folder per state dir) when the memory file system has room, else the state dir."""
    free = _free_bytes(memory_root)
    if free is None or free < min_free:
        return state_dir
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return memory_root / f"kafka-frames-devstack-{digest}"


def in_memory(data_dir: Path, memory_root: Path = MEMORY_ROOT) -> bool:
    return data_dir.is_relative_to(memory_root)
