"""One search per output folder: an exclusive lock held by the launch that runs it.

The lock is an ``flock`` on ``search.lock`` (the ``filelock`` package), so the kernel drops
it when its process dies: a launch killed with ``kill -9``, or a node that is lost (over NFS,
when its lease lapses), never blocks the same command again. ``search.lock.json`` beside it
says who holds it, for the refusal message; it is only read while the lock is held.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from trainables.outputs import LOCK_FILE, LOCK_HOLDER_FILE


class FolderBusyError(RuntimeError):
    """Another launch runs a search in this folder."""


class FolderLock:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._lock = FileLock(str(out_dir / LOCK_FILE), thread_local=False)

    def acquire(self) -> "FolderLock":
        """Take the lock at once, or raise FolderBusyError naming the search that holds it."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise FolderBusyError(f"{self.out_dir}: a search is running there ({describe_holder(self.out_dir)}); "
                                  f"wait for it, or choose another folder with --out") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)}
        tmp = self.out_dir / f".{LOCK_HOLDER_FILE}.tmp"
        tmp.write_text(json.dumps(holder))
        tmp.replace(self.out_dir / LOCK_HOLDER_FILE)
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            (self.out_dir / LOCK_HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()


def is_running(out_dir: Path) -> bool:
    """Whether a launch holds the folder's lock now (tried without taking it for long)."""
    if not (out_dir / LOCK_FILE).exists():
        return False
    probe = FileLock(str(out_dir / LOCK_FILE), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def describe_holder(out_dir: Path) -> str:
    holder = _holder(out_dir)
    if not holder:
        return "holder unknown"
    return f"host {holder['host']}, process {holder['pid']}, started {holder['started']}"


def _holder(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / LOCK_HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
