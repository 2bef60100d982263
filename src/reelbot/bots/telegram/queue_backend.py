"""The adapter's ``JobBackend`` on reelbot's Redis queue, and progress events turned into ours."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from reelbot.errors import BackendUnavailable
from reelbot.governance.admin import Admin, run_admin
from reelbot.jobs import GenerationParams, GenerationRequest, Requester
from reelbot.queue.submit import JobQueue
from reelbot.store.progress import ProgressEvent
from reelbot.store.records import JobRecord
from reelbot.store.results import store_input

from .backend import JobInfo, Progress, Submitted

log = logging.getLogger(__name__)

_CACHE = 1024


def job_info(record: JobRecord) -> JobInfo:
    """A job record as the adapter shows it."""
    return JobInfo(
        job_id=record.id,
        status=record.status,
        request=record.request,
        params=record.params,
        error=record.error_message,
    )


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Redis failures as ``BackendUnavailable``, which users are told to retry."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis: {exc}") from exc


class QueueBackend:
    """Submit, look up and cancel through ``reelbot.queue``."""

    def __init__(self, redis: ArqRedis, queue: JobQueue) -> None:
        self.redis = redis
        self.queue = queue
        # Progress events name only the job; where its status message is never changes.
        self._requests: OrderedDict[str, GenerationRequest] = OrderedDict()

    async def submit(self, request: GenerationRequest, params: GenerationParams) -> Submitted:
        """Queue the request; the queue resolves it again with the same rules as ``params``."""
        async with _reachable():
            submitted = await self.queue.submit(request)
        position = submitted.position
        return Submitted(
            job_id=submitted.record.id,
            position=position.position if position is not None else None,
            eta_s=position.eta_s if position is not None else None,
            duplicate=not submitted.created,
        )

    async def exists(self, job_id: str) -> bool:
        """Whether the job has a record."""
        async with _reachable():
            return await self.queue.records.get(job_id) is not None

    async def store_input(self, data: bytes) -> str:
        """Keep an input image in Redis for the worker."""
        async with _reachable():
            return await store_input(self.redis, data)

    async def job(self, job_id: str) -> JobInfo | None:
        """One job with its place in line while it waits or runs."""
        async with _reachable():
            record = await self.queue.records.get(job_id)
            if record is None:
                return None
            return await self._with_position(record)

    async def _with_position(self, record: JobRecord) -> JobInfo:
        info = job_info(record)
        if record.finished:
            return info
        position = await self.queue.position(record)
        if position is None:
            return info
        return JobInfo(
            job_id=info.job_id,
            status=info.status,
            request=info.request,
            params=info.params,
            position=position.position,
            eta_s=position.eta_s,
        )

    async def jobs_of(self, requester: Requester) -> list[JobInfo]:
        """The requester's unfinished jobs, oldest first."""
        async with _reachable():
            records = await self.queue.user_jobs(requester)
            active = [r for r in reversed(records) if not r.finished]
            return [await self._with_position(r) for r in active]

    async def cancel(self, job_id: str, requester: Requester) -> bool:
        """Cancel; False when the job has finished (or is being posted) already."""
        async with _reachable():
            outcome, _ = await self.queue.cancel(job_id, requester=requester)
        return outcome in ("removed", "stopping")

    async def quota_text(self, requester: Requester) -> str:
        """The requester's budget, from the queue's quota book."""
        async with _reachable():
            status = await self.queue.quotas.status(requester)
        return status.text(time.time())

    async def admin(self, requester: Requester, text: str, *, owner: bool) -> str:
        """Admin words on the quota book (the caller has checked the admin right)."""
        async with _reachable():
            return await run_admin(self.queue.quotas, Admin(requester, owner), text)

    async def progress(self, event: ProgressEvent) -> Progress | None:
        """A queue event with the job's request attached (cached: it never changes)."""
        request = self._requests.get(event.job_id)
        if request is None:
            record = await self.queue.records.get(event.job_id)
            if record is None:
                return None
            request = record.request
            self._requests[event.job_id] = request
            while len(self._requests) > _CACHE:
                self._requests.popitem(last=False)
        return Progress(
            job_id=event.job_id,
            status=event.status,
            request=request,
            step=event.step or None,
            total=event.total or None,
            message=event.message,
        )
