"""A writer thread that applies submitted writes in order, so Tune's event loop never waits
on a store (MLflow's, the Optuna study's), and whose every wait has a bound.

A write that raises is handed to ``on_error`` and the thread goes on with the next one: a
store that fails never stops the thread, and so never leaves a waiter waiting on it. A wait
(``flush``) ends when everything submitted before it is applied, or returns False when the
thread has died or has applied nothing for ``stall_s`` seconds (a store that hangs: a
server that accepts connections and never answers, a database locked by another process).

A writer may also fold writes together (``combine``): it then lets writes gather for up to
``linger_s`` after the first one, as Kafka's producer does, and applies what ``combine`` makes
of them, in order. A store whose cost is per call (MLflow's ``log_batch``: about 12 ms of CPU
a call on SQLite, 2.5 ms a report when ten reports share a call) then costs a fraction. A
``flush`` ends the wait at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_WAKE = object()  # put by flush() to end a lingering wait; never applied

# Longer than any one write may take while its store still works: MLflow's HTTP timeout
# (10 s, retried once) and SQLite's busy timeout (30 s for the study).
STALL_SECONDS = 60.0


class BackgroundWriter(Generic[T]):
    def __init__(self, name: str, apply: Callable[[T], None], on_error: Callable[[Exception], None],
                 stall_s: float = STALL_SECONDS, combine: Callable[[list[T]], list[T]] | None = None,
                 linger_s: float = 0.0) -> None:
        self.name = name
        self.stall_s = stall_s
        self._apply = apply
        self._on_error = on_error
        self._combine = combine
        self._linger_s = linger_s if combine is not None else 0.0
        self._queue: queue.Queue[object] = queue.Queue()
        self._progress = threading.Condition()
        self._submitted = 0
        self._applied = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        with self._progress:
            self._submitted += 1
        self._queue.put(item)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def flush(self, stall_s: float | None = None) -> bool:
        """Wait until every write submitted so far is applied (or handed to ``on_error``).
        False, without waiting longer, when the thread has died or has applied nothing for
        ``stall_s`` seconds (default: this writer's)."""
        stall_s = self.stall_s if stall_s is None else stall_s
        if self._linger_s:
            self._queue.put(_WAKE)
        with self._progress:
            target = self._submitted
            seen, moved_at = self._applied, time.monotonic()
            while self._applied < target:
                if not self._thread.is_alive():
                    return False
                if self._applied != seen:
                    seen, moved_at = self._applied, time.monotonic()
                left = moved_at + stall_s - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(min(left, 1.0))  # wakes to look at the thread now and then
        return True

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _WAKE:
                continue
            batch = [first, *self._gathered()] if self._linger_s else [first]
            try:
                for item in self._combined(batch):
                    self._apply_one(item)
            finally:
                with self._progress:
                    self._applied += len(batch)
                    self._progress.notify_all()

    def _gathered(self) -> list[T]:
        """What else is submitted within ``linger_s`` (or until a flush asks)."""
        gathered: list[T] = []
        deadline = time.monotonic() + self._linger_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is _WAKE:
                break
            gathered.append(item)
        while True:  # and whatever came meanwhile
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return gathered
            if item is not _WAKE:
                gathered.append(item)

    def _combined(self, batch: list[T]) -> list[T]:
        if self._combine is None:
            return batch
        try:
            return self._combine(batch)
        except Exception as exc:  # noqa: BLE001 - then each write on its own
            self._report(exc)
            return batch

    def _apply_one(self, item: T) -> None:
        try:
            self._apply(item)
        except Exception as exc:  # noqa: BLE001 - every failure goes to on_error; the thread goes on
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        try:
            self._on_error(exc)
        except Exception:  # noqa: BLE001 - a failing report must not kill the writer either
            pass
