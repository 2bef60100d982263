"""The adapter's ``JobBackend`` over reelbot's Redis queue, and the delivery hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from arq.connections import ArqRedis

from reelbot.bots.discord.backend import Delivery, JobInfo, ProgressEvent, Ticket
from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.errors import Cancelled, JobNotFound, ReelbotError, error_from
from reelbot.governance.admin import Admin, run_admin
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus, Requester
from reelbot.queue import delivery as queue_delivery
from reelbot.queue.submit import JobQueue
from reelbot.store import progress as queue_progress
from reelbot.store.leases import live_workers
from reelbot.store.results import store_input

PLATFORM = "discord"
PROGRESS_POLL_S = 0.5


class QueueBackend:
    """Submit, cancel and list jobs on the shared queue; follow their progress."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.redis = redis
        self.queue = JobQueue(redis, settings, catalog)

    async def store_input(self, data: bytes) -> str:
        """Keep an input image in Redis for the worker."""
        return await store_input(self.redis, data)

    async def submit(self, request: GenerationRequest, params: GenerationParams) -> Ticket:
        """Queue the request; the queue resolves it again itself, against the same catalog."""
        submitted = await self.queue.submit(request)
        pos = submitted.position
        return Ticket(
            job_id=submitted.record.id,
            position=pos.position if pos else None,
            eta_s=pos.eta_s if pos else None,
        )

    async def request_of(self, job_id: str) -> GenerationRequest | None:
        """The stored request of a job, while its record lives."""
        record = await self.queue.records.get(job_id)
        return record.request if record is not None else None

    async def cancel(self, job_id: str, requester: Requester) -> bool:
        """Cancel if the job is the requester's (or they are an admin) and not finished."""
        try:
            outcome, _ = await self.queue.cancel(job_id, requester=requester)
        except JobNotFound:
            return False
        return outcome in ("removed", "stopping")

    async def jobs_of(self, requester: Requester) -> list[JobInfo]:
        """The requester's unfinished jobs, oldest first."""
        records = await self.queue.user_jobs(requester)
        out: list[JobInfo] = []
        for record in reversed(records):
            if record.finished or record.status == JobStatus.DELIVERING:
                continue
            pos = await self.queue.position(record)
            out.append(
                JobInfo(
                    job_id=record.id,
                    status=record.status,
                    task=record.params.task.value,
                    prompt=record.params.prompt,
                    position=pos.position if pos else None,
                    eta_s=pos.eta_s if pos else None,
                )
            )
        return out

    async def stats(self) -> dict[str, int]:
        """Jobs waiting per generation queue and live workers."""
        counts: dict[str, int] = {}
        for name in self.queue.generation_queues:
            counts[f"waiting {name}"] = int(await self.redis.zcard(name))
        counts["workers"] = len(await live_workers(self.redis))
        return counts

    async def quota_text(self, requester: Requester) -> str:
        """The requester's budget, from the queue's quota book."""
        status = await self.queue.quotas.status(requester)
        return status.text(time.time())

    async def admin(self, requester: Requester, text: str, *, owner: bool) -> str:
        """Admin words on the quota book (the caller has checked the admin right)."""
        return await run_admin(self.queue.quotas, Admin(requester, owner), text)

    async def progress(self, stop: asyncio.Event) -> AsyncIterator[ProgressEvent]:
        """This platform's progress events from the workers, until ``stop`` is set."""
        async with queue_progress.ProgressSubscription(self.redis, PLATFORM) as events:
            # Polled rather than cancelled: closing the subscription from inside a cancelled
            # read was seen to hang the adapter's shutdown.
            while not stop.is_set():
                event = await events.get(PROGRESS_POLL_S)
                if event is None:
                    continue
                yield ProgressEvent(
                    job_id=event.job_id,
                    status=event.status,
                    step=event.step or None,
                    total=event.total or None,
                )


def to_delivery(item: queue_delivery.Delivery) -> Delivery:
    """The queue's delivery (a record and maybe bytes) as the poster wants it."""
    record = item.record
    error: ReelbotError | None = None
    if item.data is None:
        if record.status == JobStatus.CANCELLED:
            error = Cancelled()
        else:
            # The record keeps the error's code and a message fit to show the user.
            error = error_from(record.error_code, record.error_message or "The job failed.")
    filename = None
    if record.result is not None:
        filename = f"reelbot-{record.id}.{record.result.ext}"
        if record.result.spoiler:
            # Discord hides an attachment whose name starts with SPOILER_ until clicked.
            filename = f"SPOILER_{filename}"
    return Delivery(
        job_id=record.id,
        request=record.request,
        params=record.params,
        data=item.data,
        filename=filename,
        error=error,
        note=record.result.note if record.result else "",
    )


def delivery_hook(deliver: Callable[[Delivery], Awaitable[str | None]]) -> queue_delivery.Post:
    """The ``post`` function a ``DeliveryConsumer`` calls, posting through ``deliver``."""

    async def post(delivery: queue_delivery.Delivery) -> str | None:
        return await deliver(to_delivery(delivery))

    return post
