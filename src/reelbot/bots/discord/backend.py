"""What the Discord adapter needs from the job queue, as a Protocol, and the values it passes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from reelbot.errors import ReelbotError
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus, Requester


@dataclass(frozen=True)
class Ticket:
    """A submitted job: its id and where it stands in the queue."""

    job_id: str
    position: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class JobInfo:
    """One job as ``/jobs`` shows it."""

    job_id: str
    status: JobStatus
    task: str
    prompt: str
    position: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """A change in a job's state, from the worker; lossy, so the adapter never relies on it."""

    job_id: str
    status: JobStatus
    step: int | None = None
    total: int | None = None
    position: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class Delivery:
    """A finished job for the platform to post: a file, or the error that stopped it."""

    job_id: str
    request: GenerationRequest
    params: GenerationParams | None = None
    data: bytes | None = None
    filename: str | None = None
    error: ReelbotError | None = None
    note: str = ""


class JobBackend(Protocol):
    """The queue operations the adapter calls; implemented over Redis in ``queue_backend``."""

    async def store_input(self, data: bytes) -> str:
        """Keep an input image for the worker and return its reference."""
        ...

    async def submit(self, request: GenerationRequest, params: GenerationParams) -> Ticket:
        """Queue a job (idempotent on the request's source id)."""
        ...

    async def request_of(self, job_id: str) -> GenerationRequest | None:
        """The request a job was made from, for re-roll; None when it is gone."""
        ...

    async def cancel(self, job_id: str, requester: Requester) -> bool:
        """Cancel a job of the requester's (any job for an admin); False when none matched."""
        ...

    async def jobs_of(self, requester: Requester) -> list[JobInfo]:
        """The requester's queued and running jobs."""
        ...

    async def stats(self) -> dict[str, int]:
        """Queue depth and similar counters for ``/admin status``."""
        ...

    async def quota_text(self, requester: Requester) -> str:
        """The requester's remaining credits, jobs in flight and when the window resets."""
        ...

    async def admin(self, requester: Requester, text: str, *, owner: bool) -> str:
        """Run ``/admin`` words (``quota set …``, ``audit``) and say what happened."""
        ...

    def progress(self, stop: asyncio.Event) -> AsyncIterator[ProgressEvent]:
        """Progress events from the workers until ``stop`` is set (checked about every second)."""
        ...
