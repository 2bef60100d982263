"""Delivery: the platform process posts each finished job once, from its own arq queue.

The worker never talks to a chat platform. It stores the result and enqueues a delivery job
on ``reelbot:deliver:{platform}``; the platform's ``DeliveryConsumer`` posts it and marks the
record posted with a compare-and-set, so a re-run of the delivery job (a consumer crash, a
duplicate enqueue) finds the mark and posts nothing.

If Redis fails between the post and the mark, the consumer remembers the post and its retry
only writes the mark. The one window left: the consumer dies after the platform accepted the
post and before the mark is written. The re-run then posts again with the same
``idempotency_key``; a platform that deduplicates by a nonce (Discord's message ``nonce`` with
``enforce_nonce``) drops the second post, one that cannot (Telegram) shows it twice. Failed
and cancelled jobs get a ``notice`` delivery the same way, so the status message always ends
in a final state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal, Protocol

from arq.connections import ArqRedis
from arq.worker import Retry, func
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from reelbot import logs, metrics
from reelbot.config import Settings
from reelbot.errors import RateLimited, ResultExpired, TransientError, Undeliverable
from reelbot.governance.quotas import settle_moved
from reelbot.jobs import JobStatus
from reelbot.store import keys
from reelbot.store.leases import QueueWorker
from reelbot.store.progress import ProgressEvent, publish
from reelbot.store.records import JobRecord, RecordStore
from reelbot.store.results import RedisResultStore, ResultStore

log = logging.getLogger(__name__)

__all__ = ["DELIVER", "Delivery", "DeliveryConsumer", "Post", "enqueue_delivery"]

DELIVER = "deliver"
POST_TIMEOUT_S = 120.0
"""A 50 MB upload on a slow link; a hung post is retried rather than holding the job."""
MAX_POST_TRIES = 8
RETRY_BASE_S = 2.0


class Delivery(BaseModel):
    """What a platform posts: a result with its bytes, or a notice of failure or cancellation."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: Literal["result", "notice"]
    record: JobRecord
    data: bytes | None = None
    idempotency_key: str
    """The same on every attempt of this delivery, for platforms that deduplicate by nonce."""
    attempt: int = 1


class Post(Protocol):
    """A platform's poster: returns the id of the message it posted, if it has one.

    Raises ``RateLimited`` or another ``TransientError`` to be retried later; anything else
    marks the job undeliverable.
    """

    async def __call__(self, delivery: Delivery) -> str | None: ...


async def enqueue_delivery(redis: ArqRedis, record: JobRecord) -> None:
    """Enqueue the job's delivery once (arq drops a second enqueue while the first exists)."""
    queue = keys.delivery_queue(record.platform)
    await redis.enqueue_job(
        DELIVER, record.id, _job_id=keys.delivery_job_id(record.id), _queue_name=queue
    )
    await redis.publish(keys.wake_channel(queue), record.id)


async def _deliver(ctx: dict[str, object], job_id: str) -> None:
    worker = ctx["worker"]
    assert isinstance(worker, DeliveryConsumer)
    try_ = ctx.get("job_try", 1)
    try:
        with logs.job_context(job_id):
            await worker.deliver(job_id, try_ if isinstance(try_, int) else 1)
    except (RedisError, OSError) as exc:
        # Redis stayed away longer than the client's retries: try again, do not drop it.
        log.warning("delivery %s: Redis failed (%s); retrying", job_id, exc)
        raise Retry(defer=RETRY_BASE_S) from exc


class Notice(Protocol):
    """What the platform shows when a post keeps failing or has failed for good."""

    async def __call__(self, record: JobRecord, attempt: int, final: bool) -> None: ...


RETRY_NOTICE_FROM = 3
"""Failed post attempts after which the user is told the result is being retried."""
RETRY_MAX_S = 60.0


class DeliveryConsumer(QueueWorker):
    """A platform's delivery queue consumer; hosted inside the platform process."""

    kind = "delivery"

    def __init__(
        self,
        redis: ArqRedis,
        platform: str,
        post: Post,
        *,
        settings: Settings,
        results: ResultStore | None = None,
        max_concurrent: int = 4,
        worker_id: str | None = None,
        poll_delay_s: float = 0.5,
        notice: Notice | None = None,
    ) -> None:
        super().__init__(
            [func(_deliver, name=DELIVER, max_tries=MAX_POST_TRIES)],
            redis=redis,
            queue=keys.delivery_queue(platform),
            worker_id=worker_id,
            lease_s=settings.dead_worker_s,
            heartbeat_s=settings.heartbeat_s,
            poll_delay_s=poll_delay_s,
            max_jobs=max_concurrent,
            max_tries=MAX_POST_TRIES,
            close_redis=False,
        )
        self.platform = platform
        self.post = post
        self.notice = notice
        self.records = RecordStore(
            redis, finished_ttl_s=settings.history_ttl_s, on_status=[settle_moved]
        )
        self.results = results or RedisResultStore(redis, ttl_s=settings.result_ttl_s)
        self._unmarked: dict[str, str | None] = {}
        """Posted by this process, the mark not yet written (Redis failed right after the
        post): the retry writes the mark instead of posting twice."""

    async def deliver(self, job_id: str, attempt: int) -> None:
        """Post the job's result or notice unless it was posted already, then mark it posted."""
        record = await self.records.get(job_id)
        if record is None:
            log.warning("delivery %s: no job record (expired?); nothing to post", job_id)
            return
        if record.posted_at is not None:
            self._unmarked.pop(job_id, None)
            return
        if job_id in self._unmarked:
            # Posted by this process already; only the mark failed (Redis went away): write
            # the mark, never post again.
            await self._mark_posted(job_id, self._unmarked[job_id], attempt)
            return
        data: bytes | None = None
        if record.status == JobStatus.DELIVERING and record.result is not None:
            data = await self.results.get(record.result.ref)
            if data is None:
                failed = await self.records.transition(
                    job_id,
                    JobStatus.FAILED,
                    error_code=ResultExpired.code,
                    error_message=ResultExpired.default_message,
                )
                record = failed or record
        elif not record.finished:
            log.warning("delivery %s: job is %s, not ready to post", job_id, record.status)
            return
        kind: Literal["result", "notice"] = "result" if data is not None else "notice"
        delivery = Delivery(
            job_id=job_id,
            kind=kind,
            record=record,
            data=data,
            idempotency_key=f"reelbot-{job_id}-{kind}",
            attempt=attempt,
        )
        try:
            async with asyncio.timeout(POST_TIMEOUT_S):
                message_id = await self.post(delivery)
        except (RateLimited, TransientError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, TransientError) else TransientError.code
            metrics.DELIVERY_RETRIES.labels(self.platform, code).inc()
            log.warning("delivery %s: attempt %d failed: %s", job_id, attempt, exc)
            if attempt >= MAX_POST_TRIES:
                # No retry left: give up now instead of waiting for a try that never comes.
                await self._undeliverable(job_id, f"{type(exc).__name__}: {exc}", attempt)
                return
            if attempt >= RETRY_NOTICE_FROM:
                await self._tell(record, attempt, final=False)
            wait = RETRY_BASE_S * 2 ** (attempt - 1)
            if isinstance(exc, RateLimited) and exc.retry_after:
                wait = exc.retry_after
            raise Retry(defer=min(wait, RETRY_MAX_S)) from exc
        except Exception as exc:
            # A permanent refusal (a 4xx other than 429): final at once, and said so.
            log.exception("delivery %s: the platform refused the post", job_id)
            await self._undeliverable(job_id, f"{type(exc).__name__}: {exc}", attempt)
            return
        metrics.DELIVERIES.labels(self.platform, kind).inc()
        self._unmarked[job_id] = message_id
        await self._mark_posted(job_id, message_id, attempt)

    async def _mark_posted(self, job_id: str, message_id: str | None, attempt: int) -> None:
        await self._write_mark(job_id, message_id, attempt)
        self._unmarked.pop(job_id, None)

    async def _write_mark(self, job_id: str, message_id: str | None, attempt: int) -> None:
        now = time.time()

        def change(r: JobRecord) -> JobRecord | None:
            if r.posted_at is not None:
                return None
            fields = {"posted_at": now, "posted_message_id": message_id, "post_attempts": attempt}
            if r.status == JobStatus.DELIVERING:
                return r.moved(JobStatus.DELIVERED, now=now, **fields)
            return r.model_copy(update=fields)

        record = await self.records.update(job_id, change)
        if record is not None:
            event = ProgressEvent(job_id=job_id, status=record.status, at=now)
            await publish(self.pool, self.platform, event)

    async def _tell(self, record: JobRecord, attempt: int, *, final: bool) -> None:
        """Tell the user (best effort): a notice that fails must not cost the delivery."""
        if self.notice is None:
            return
        try:
            await self.notice(record, attempt, final)
        except Exception:
            log.warning("delivery %s: could not tell the user", record.id, exc_info=True)

    async def _undeliverable(self, job_id: str, detail: str, attempt: int = 0) -> None:
        log.error("delivery %s: giving up: %s", job_id, detail)
        failed = await self.records.transition(
            job_id,
            JobStatus.FAILED,
            only_from=[JobStatus.DELIVERING],
            error_code=Undeliverable.code,
            error_message=Undeliverable.default_message,
            note=detail[:300],
        )
        if failed is not None:
            metrics.FAILURES.labels(Undeliverable.code).inc()
            await self._tell(failed, attempt, final=True)

    async def gave_up(self, job_id: str) -> None:
        """Too many failed post attempts: record it so the job does not look stuck."""
        real_id = job_id.removeprefix(keys.delivery_job_id(""))
        await self._undeliverable(real_id, f"gave up after {MAX_POST_TRIES} attempts")
