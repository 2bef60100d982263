"""What the Telegram adapter needs from the job queue, as a protocol tests can fake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus, Requester


@dataclass(frozen=True)
class Submitted:
    """The answer to a submit: the job, its place in line and a time estimate."""

    job_id: str
    position: int | None = None
    eta_s: float | None = None
    duplicate: bool = False
    """True when a job with this id already existed (a re-delivered update)."""


@dataclass(frozen=True)
class JobInfo:
    """A job as the adapter shows it."""

    job_id: str
    status: JobStatus
    request: GenerationRequest
    params: GenerationParams
    position: int | None = None
    eta_s: float | None = None
    step: int | None = None
    total: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Progress:
    """One progress or status event of a job, addressed to where its status message is."""

    job_id: str
    status: JobStatus
    request: GenerationRequest
    step: int | None = None
    total: int | None = None
    position: int | None = None
    eta_s: float | None = None
    message: str | None = None
    """For a failed job: the text to show the user."""


class JobBackend(Protocol):
    """Submit, look up and cancel jobs; store input images."""

    async def submit(self, request: GenerationRequest, params: GenerationParams) -> Submitted:
        """Put a job on the queue (idempotent on the job id derived from ``source_id``)."""
        ...

    async def exists(self, job_id: str) -> bool:
        """Whether a job with this id was ever submitted (and is still remembered)."""
        ...

    async def store_input(self, data: bytes) -> str:
        """Keep an input image for the worker; returns its reference."""
        ...

    async def job(self, job_id: str) -> JobInfo | None:
        """One job, or None when it is unknown or expired."""
        ...

    async def jobs_of(self, requester: Requester) -> list[JobInfo]:
        """The requester's queued and running jobs, oldest first."""
        ...

    async def cancel(self, job_id: str, requester: Requester) -> bool:
        """Cancel a job of the requester's (admins: anyone's); False when already finished."""
        ...

    async def quota_text(self, requester: Requester) -> str:
        """The requester's remaining budget and when it resets, as a sentence."""
        ...

    async def admin(self, requester: Requester, text: str, *, owner: bool) -> str:
        """Run ``/admin`` words (``quota set …``, ``audit``) and say what happened."""
        ...
