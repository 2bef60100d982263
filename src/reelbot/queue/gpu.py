"""The GPU slot: which job holds the pipeline thread, and when to fetch the next one.

One pipeline call at a time per process: every call goes through one single-thread executor.
A worker fetches the next job while the current one still runs and queues its call behind it,
so that the call starts the moment the thread is free (its record read and its input image
decoded already). Only one job waits at a time, and only near the end of the running one: a
job held early behind a long video would wait there while a peer worker sat idle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["PREFETCH_WINDOW_S", "GpuSlot"]

PREFETCH_WINDOW_S = 2.0
"""Long enough to fetch a job and decode its input; short enough that no peer loses out."""


class GpuSlot:
    """The pipeline thread's state, shared by the workers of every queue a process serves."""

    def __init__(self, prefetch_window_s: float = PREFETCH_WINDOW_S) -> None:
        self.prefetch_window_s = prefetch_window_s
        self.pending: set[str] = set()
        """Jobs fetched whose pipeline call has not started."""
        self.running: str | None = None
        self.expected_end: float | None = None
        self._started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.listeners: list[Callable[[], None]] = []
        """Workers to wake when the slot wants another job."""

    def wants_job(self) -> bool:
        """Whether fetching one more job now would keep the GPU busy without hoarding."""
        if self.pending:
            return False
        if self.running is None:
            return True
        # Unknown run time: take the next job now rather than risk an idle gap.
        if self.expected_end is None:
            return True
        return self.expected_end - time.monotonic() <= self.prefetch_window_s

    def _notify(self) -> None:
        for wake in self.listeners:
            wake()

    def started(self, job_id: str, estimate_s: float | None) -> None:
        """A pipeline call began; ``estimate_s`` is its expected length, if known."""
        self.pending.discard(job_id)
        self.running = job_id
        self._started_at = time.monotonic()
        self.expected_end = None if estimate_s is None else self._started_at + estimate_s
        self._reschedule()

    def stepped(self, step: int, total: int) -> None:
        """A progress report: re-estimate the end from the measured step rate."""
        if step <= 0 or total <= 0 or self.expected_end is None:
            return
        elapsed = time.monotonic() - self._started_at
        self.expected_end = time.monotonic() + elapsed / step * max(0, total - step)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.expected_end is None:
            self._notify()
            return
        delay = self.expected_end - self.prefetch_window_s - time.monotonic()
        if delay <= 0:
            self._notify()
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._notify)

    def finished(self, job_id: str) -> None:
        """The job's pipeline call returned."""
        if self.running != job_id:
            return
        self.running = None
        self.expected_end = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notify()
