"""The GPU slot: which job holds the pipeline thread, and when to fetch the next one.

One pipeline call at a time per process: every call goes through one single-thread executor.
A worker fetches the next job while the current one still runs and queues its call behind it,
so that the call starts the moment the thread is free (its record read and its input image
decoded already). Only one job waits at a time, and only near the end of the running one: a
job held early behind a long video would wait there while a peer worker sat idle.

Before taking jobs, a worker loads its queues' default models in that thread
(``preload_defaults``), so the first user does not wait for a load or a compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from reelbot.catalog import Task, load_catalog
from reelbot.config import Settings
from reelbot.errors import ReelbotError
from reelbot.worker.ports import PipelineRunner

__all__ = ["PREFETCH_WINDOW_S", "GpuSlot", "preload_defaults"]

log = logging.getLogger(__name__)

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
        self.queues: dict[str, Callable[[], None]] = {}
        """The queues whose workers share this slot, each with how to wake its worker."""
        self.model: str | None = None
        """The model of the latest call to start: loaded when the next one starts."""
        self.id = os.urandom(4).hex()
        """Names this GPU in its workers' heartbeats, so peers are told from one's own queues."""
        self.load_s: dict[str, float] = {}
        """Each model's latest measured load time here (a preload or a job's load)."""
        self.run_s: dict[str, float] = {}
        """Each model's latest measured pipeline call here, after its load (the peers' chooser
        weighs what a run of it keeps this GPU busy)."""

    def free_at(self) -> float | None:
        """When the running call is expected to end (epoch seconds; now when idle), for the
        heartbeat; None while that is unknown or a fetched job waits behind it."""
        if self.pending:
            return None
        if self.running is None:
            return time.time()
        if self.expected_end is None:
            return None
        return time.time() + max(0.0, self.expected_end - time.monotonic())

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

    def started(self, job_id: str, estimate_s: float | None, model: str | None = None) -> None:
        """A pipeline call began; ``estimate_s`` is its expected length, if known."""
        if model is not None:
            self.model = model
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


async def preload_defaults(
    settings: Settings,
    runner: PipelineRunner,
    queues: Sequence[str],
    pipeline_thread: Executor,
    stop: asyncio.Event,
    gpu: GpuSlot | None = None,
) -> None:
    """Load (and, when compiling, warm up) the default model of each task of ``queues``; the
    load times go into ``gpu.load_s``."""
    catalog = load_catalog(settings.models, settings.styles_file)
    # The first queue's models load last, so they stay resident on a card that holds only one.
    tasks = [t for q in reversed(queues) for t in Task if settings.queue_for(t) == q]
    pairs: dict[tuple[str, Task], None] = {}
    for task in tasks:
        with contextlib.suppress(ReelbotError):  # a set that serves no model for the task
            pairs[(catalog.default_for(task).name, task)] = None
    loop = asyncio.get_running_loop()
    for model, task in pairs:
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            await loop.run_in_executor(pipeline_thread, runner.preload, model, task)
        except Exception as exc:
            # Not fatal: each job loads its model again and fails on its own if it must.
            log.warning("preloading %s for /%s failed: %s", model, task.value, exc)
            continue
        took = time.monotonic() - started
        log.info("%s ready for /%s in %.1fs", model, task.value, took)
        if gpu is not None and task not in (Task.UPSCALE, Task.DESCRIBE):
            # The first task's pipeline carries the load; a second one of the model is quick.
            gpu.load_s[model] = max(took, gpu.load_s.get(model, 0.0))
