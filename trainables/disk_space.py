"""A full disk: the one fault of the environment that every writer of a search can meet.

ENOSPC (no space), EDQUOT (over quota) and EROFS (the file system went read-only, as a
failing disk or an NFS server in trouble does) are never a configuration's fault: a trial
that meets one is not failed and Optuna is not told FAIL. The search ends as interrupted,
and the same command continues it once there is space (trainables/search/run.py).

A trial runs in a Ray worker. One that cannot write its checkpoint reports a result holding
``DISK_FULL_KEY`` (the error's line) and returns, instead of raising: Tune then neither
retries it nor writes error files to the full disk, and the driver (search/recording.py)
leaves it unfinished. Any other ``DiskFullError`` reaching Tune as an error carries
``MARKER`` in its message, which the driver finds in the error text (``in_error_text``).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
MARKER = "[disk full]"
DISK_FULL_KEY = "disk_full"  # the result key of a trial that could not write its checkpoint
# SQLite reports SQLITE_FULL in words, with no errno (through sqlalchemy, for MLflow and Optuna).
_SQLITE_FULL = "database or disk is full"


class DiskFullError(OSError):
    """``what`` could not be written in ``folder``: its file system is full, over quota or
    read-only. ``needed``: what a search of this spec needs there (said to the user)."""

    def __init__(self, folder: Path | str, what: str, reason: str = "no space left on device",
                 needed: int | None = None) -> None:
        super().__init__(errno.ENOSPC, reason)
        self.folder, self.what, self.reason, self.needed = Path(folder), what, reason, needed

    def needing(self, needed: int | None) -> "DiskFullError":
        """The same fault, saying what the search needs."""
        return DiskFullError(self.folder, self.what, self.reason, needed)

    def __str__(self) -> str:
        line = f"{MARKER} {self.folder}: could not write {self.what} ({self.reason})"
        if self.needed is None:
            return line
        return (f"{line}. The search is interrupted, no trial failed: a search of this spec needs about "
                f"{size_text(self.needed)} there ({size_text(free_bytes(self.folder))} free now). Free some "
                f"space (or move the folder), then run the same command again to continue it.")

    def __reduce__(self):  # Ray pickles a trial's error to the driver
        return DiskFullError, (self.folder, self.what, self.reason, self.needed)


def full_disk_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its cause, its context) that says the disk
    is full, or None when the error is something else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return current
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return current
        if _SQLITE_FULL in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def as_disk_full(exc: BaseException, folder: Path | str, what: str) -> DiskFullError | None:
    """``exc`` as a DiskFullError naming ``folder`` and ``what``; None when it is another error."""
    cause = full_disk_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, DiskFullError):
        return cause
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _SQLITE_FULL
    return DiskFullError(folder, what, reason.lower())


def in_error_text(text: str) -> DiskFullError | None:
    """The DiskFullError a trial raised, found in the error text Tune recorded for it."""
    for line in reversed(text.splitlines()):
        at = line.find(MARKER)
        if at >= 0:
            where, _, rest = line[at + len(MARKER):].strip().partition(": could not write ")
            what, _, reason = rest.rpartition(" (")
            return DiskFullError(where, what or rest, reason.rstrip(")") or "no space left on device")
    return None


def append_whole(handle: BinaryIO, data: bytes) -> None:
    """Append ``data`` (whole lines) to an unbuffered file opened for appending, whole or not at
    all: a write that fails part-way (a full disk) is cut back to the file's size before it, so a
    reader never meets a partial line followed by whole ones. Raises the write's error."""
    size = os.fstat(handle.fileno()).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[handle.write(view):]
    except OSError:
        try:
            os.ftruncate(handle.fileno(), size)
        except OSError:
            pass  # left cut short: its reader drops a last partial line (as a killed writer's)
        raise


def free_bytes(folder: Path) -> int:
    """Free space where ``folder`` is (its nearest existing parent, for a folder not made yet)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage("/").free


def size_text(count: float) -> str:
    """Bytes in the unit a person reads (1.5 MB, 3.2 GB)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


class DiskFault:
    """The first full-disk error a search met, from whichever thread met it (a Tune callback,
    the MLflow writer, the Optuna writer): the search's stop reads it to end the search."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: DiskFullError | None = None

    def report(self, error: DiskFullError) -> None:
        with self._lock:
            if self.error is None:
                self.error = error

    def __bool__(self) -> bool:
        return self.error is not None

    def __reduce__(self):  # Tune pickles its stopper into tuner.pkl, never read back: a fresh latch
        return DiskFault, ()
