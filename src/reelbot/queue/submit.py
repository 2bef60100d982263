"""The adapters' and operators' side of the queue: submit, look up, cancel.

A submit is one Lua script: it finds a duplicate (the job id comes from the platform's own
update id), applies the global queue cap, and writes the record, arq's job and the queue entry
together, so a crash can never leave half a job. It then wakes idle workers over pub/sub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from arq.connections import ArqRedis
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from reelbot import metrics
from reelbot.catalog import Catalog, Task
from reelbot.clips import restyle_params, upscale_clip_params
from reelbot.config import Settings
from reelbot.errors import (
    BackendUnavailable,
    Busy,
    Cancelled,
    ContentRefused,
    InvalidImage,
    InvalidVideo,
    JobNotFound,
    UserError,
)
from reelbot.governance import audit
from reelbot.governance.policy import PolicyStore, server_scope
from reelbot.governance.quotas import RESERVE_LUA, QuotaBook, settle_moved
from reelbot.inputs import upright_size
from reelbot.jobs import GenerationRequest, JobStatus, Requester, job_id_for, resolve, seed_for
from reelbot.queue.delivery import enqueue_delivery
from reelbot.store import keys, serializer
from reelbot.store.estimates import Position, estimate_s, queue_position, seconds_per_credit
from reelbot.store.leases import live_workers
from reelbot.store.progress import ProgressEvent, publish
from reelbot.store.records import ACTIVE_TTL_S, JobRecord, RecordStore
from reelbot.store.results import load_input
from reelbot.video_inputs import ClipInfo, VideoLimits, probe_clip

__all__ = ["GENERATE", "CancelOutcome", "JobQueue", "Submitted", "may_cancel"]

log = logging.getLogger(__name__)

GENERATE = "generate"
"""The arq function name of a generation job."""
JOB_EXPIRES_MS = 24 * 3600 * 1000
"""arq drops a job that has not started within a day (its default)."""
CANCEL_FLAG_TTL_S = 3600
USER_INDEX_LIMIT = 1000

# A duplicate returns before the quota fragment, so a repeated update is never charged twice.
_SUBMIT = (
    """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local total = 0
for i = 6, 7 do total = total + redis.call('ZCARD', KEYS[i]) end
if total >= tonumber(ARGV[4]) then return {-1, tostring(total)} end
"""
    + RESERVE_LUA
    + """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[6])
-- Jobs submitted in the same millisecond would tie and run in job-id order; a distinct
-- score keeps the queue first come, first served.
local score = qscore
local top = redis.call('ZREVRANGEBYSCORE', KEYS[3], score, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[3], score, ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[7])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[9]) + 1))
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[5])
-- The job's model (the last key and arg), submit time and cost (the quota fragment's): what
-- the workers' model-affinity choice reads (worker.candidates) instead of whole records.
redis.call('HSET', KEYS[#KEYS], 'm', ARGV[#ARGV], 't', ARGV[3], 'c', ARGV[10])
redis.call('PEXPIRE', KEYS[#KEYS], ARGV[6])
redis.call('PUBLISH', ARGV[8], ARGV[7])
return {1, ''}
"""
)

# A job that a worker holds is told to stop; one that only waits is taken out of the queue.
_CANCEL = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 'signalled'
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[3], KEYS[4])
  return 'removed'
end
return 'absent'
"""

CancelOutcome = Literal["removed", "stopping", "too_late", "already_finished"]


@dataclass(frozen=True)
class Submitted:
    """A submitted job: its record, whether this call created it, and its place in line."""

    record: JobRecord
    created: bool
    position: Position | None


def _owns(requester: Requester, record: JobRecord) -> bool:
    return (record.requester.platform, record.requester.user_id) == (
        requester.platform,
        requester.user_id,
    )


def may_cancel(requester: Requester, record: JobRecord) -> bool:
    """The job's author; an admin of the server it came from (same platform); any owner."""
    if requester.is_owner or _owns(requester, record):
        return True
    job = record.requester
    return (
        requester.is_admin
        and requester.server_id is not None
        and (requester.platform, requester.server_id) == (job.platform, job.server_id)
    )


class JobQueue:
    """Submit, look up and cancel generation jobs."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog
        self.records = RecordStore(
            redis, finished_ttl_s=settings.history_ttl_s, on_status=[settle_moved]
        )
        self.quotas = QuotaBook(redis, settings)
        self.policy = PolicyStore(redis, settings)
        self._submit = redis.register_script(_SUBMIT)
        self._cancel = redis.register_script(_CANCEL)

    @property
    def generation_queues(self) -> tuple[str, str]:
        """Both generation queues; the global cap counts them together."""
        return (self.settings.image_queue, self.settings.video_queue)

    async def submit(
        self, request: GenerationRequest, *, with_position: bool = True, now: float | None = None
    ) -> Submitted:
        """Queue a request, or return the existing job when this update was seen before.

        ``now`` is the submit time (tests pass it to cross a daily reset without sleeping).

        Raises:
            UserError: an option, prompt or image problem (from ``resolve``).
            ContentRefused: the prompt hits a blocked word or pattern (logged for admins).
            Busy: the queue is at its global cap; ``retry_after`` is a hint in seconds.
            QuotaExceeded: over a budget; ``retry_after`` when it frees up, where known.
            BackendUnavailable: Redis cannot be reached (after the client's retries); nothing
                was accepted, and the user is told to try again.
        """
        try:
            return await self._submit_request(request, with_position=with_position, now=now)
        except (RedisError, OSError) as exc:
            metrics.REFUSALS.labels(request.requester.platform, BackendUnavailable.code).inc()
            raise BackendUnavailable(f"Redis: {type(exc).__name__}") from exc

    async def _clip(self, request: GenerationRequest) -> ClipInfo | None:
        """The input clip's header (``video_inputs.probe_clip``: refused in words when it is
        not a usable video), for its size, length and cost."""
        if request.video_ref is None:
            return None
        data = await load_input(self.redis, request.video_ref)
        if data is None:
            raise InvalidVideo("The input video expired before the job was queued; send it again.")
        limits = VideoLimits(max_duration_s=self.settings.video_input_max_s)
        return await asyncio.to_thread(probe_clip, data, limits=limits)

    async def _input_size(self, request: GenerationRequest) -> tuple[int, int] | None:
        """An input's upright size: an upscale's output size and cost follow from it, and a
        remix or an animation keeps its aspect ratio."""
        if not request.task.needs_image or request.image_ref is None:
            return None
        data = await load_input(self.redis, request.image_ref)
        if data is None:
            raise InvalidImage("The input image expired before the job was queued; send it again.")
        if request.task == Task.UPSCALE:
            return upright_size(data)
        try:
            return upright_size(data)
        except InvalidImage:
            return None  # the worker refuses it in words, as for any input it cannot read

    async def _submit_request(
        self, request: GenerationRequest, *, with_position: bool, now: float | None
    ) -> Submitted:
        platform = request.requester.platform
        metrics.SUBMISSIONS.labels(platform, request.task.value).inc()
        job_id = job_id_for(platform, request.source_id)
        existing = await self.records.get(job_id)
        if existing is not None:
            return await self._submitted(existing, created=False, with_position=with_position)
        # A grid size without --n: the server's own default over the deployment's.
        own_count = (await self.policy.for_requester(request.requester)).count
        try:
            clip = await self._clip(request)
            params = resolve(
                request.task,
                request.text,
                self.catalog,
                explicit=request.options,
                # Extend is an /animate from the clip's last frame.
                has_image=request.image_ref is not None or clip is not None,
                has_video=clip is not None,
                default_seed=seed_for(job_id),
                default_count=own_count or self.settings.default_count,
                image_size=clip.display_size if clip else await self._input_size(request),
                upscale_max_side=self.settings.upscale_max_side,
            )
            if clip is not None and request.task == Task.RESTYLE:
                params = restyle_params(params, self.catalog.get(params.model), clip)
            if clip is not None and request.task == Task.UPSCALE_VIDEO:
                upscaler, max_s = self.catalog.upscaler(params.model), self.settings.video_max_s
                params = upscale_clip_params(params, upscaler, clip, max_s=max_s)
        except UserError as exc:
            metrics.REFUSALS.labels(platform, exc.code).inc()
            raise
        now = time.time() if now is None else now
        # Before anything is written: a refused prompt leaves no job and spends no quota.
        try:
            await self.policy.check_prompt(request.requester, params.prompt, job_id=job_id, now=now)
        except ContentRefused as exc:
            metrics.REFUSALS.labels(platform, exc.code).inc()
            raise
        queue = self.settings.queue_for(request.task)
        record = JobRecord(
            id=job_id,
            queue=queue,
            request=request,
            params=params,
            created_at=now,
            updated_at=now,
            times={JobStatus.QUEUED: now},
        )
        score = int(now * 1000)
        job = serialize_job(GENERATE, (job_id,), {}, None, score, serializer=serializer.dumps)
        quota_keys, quota_args, limits = await self.quotas.admission(
            request.requester, job_id=job_id, queue=queue, cost=record.cost, now=now
        )
        created, detail, *extra = await self._submit(
            keys=[
                keys.record(job_id),
                keys.arq_job(job_id),
                queue,
                keys.JOB_INDEX,
                keys.user_jobs(request.requester.platform, request.requester.user_id),
                *self.generation_queues,
                *quota_keys,
                keys.affinity(job_id),
            ],
            args=[
                record.model_dump_json(),
                job,
                score,
                self.settings.max_queued,
                ACTIVE_TTL_S,
                JOB_EXPIRES_MS,
                job_id,
                keys.wake_channel(queue),
                keys.INDEX_LIMIT,
                *quota_args,
                record.params.model,
            ],
        )
        if created == -1:
            metrics.REFUSALS.labels(platform, Busy.code).inc()
            raise await self._busy(int(detail), record)
        if created == -2:
            reason, amount = detail.decode(), float(extra[0])
            metrics.REFUSALS.labels(platform, reason).inc()
            raise self.quotas.refusal(reason, amount, limits, cost=record.cost, now=now)
        if created == 1:
            metrics.ADMISSIONS.labels(platform, request.task.value).inc()
            await self._keep_history(request.requester)
        if created == 0:
            record = JobRecord.model_validate_json(detail)
        return await self._submitted(record, created=created == 1, with_position=with_position)

    async def _keep_history(self, requester: Requester) -> None:
        """The user's index outlives the queue's week: ``/history`` reaches back as far as the
        records live (REELBOT_HISTORY_DAYS), over their newest ``USER_INDEX_LIMIT`` jobs."""
        key = keys.user_jobs(requester.platform, requester.user_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.expire(key, self.settings.history_ttl_s)
                pipe.zremrangebyrank(key, 0, -(USER_INDEX_LIMIT + 1))
                await pipe.execute()
        except RedisError as exc:  # the job is queued; only its history may end sooner
            log.warning("could not extend %s's job history: %s", requester.user_id, exc)

    async def _submitted(
        self, record: JobRecord, *, created: bool, with_position: bool
    ) -> Submitted:
        position = await self.position(record) if with_position else None
        return Submitted(record=record, created=created, position=position)

    async def _busy(self, total: int, record: JobRecord) -> Busy:
        spc = (await seconds_per_credit(self.redis, [record.params.model]))[record.params.model]
        workers = max(1, len(await live_workers(self.redis, record.queue)))
        over = total - self.settings.max_queued + 1
        wait = min(600.0, max(10.0, over * estimate_s(spc, record.cost) / workers))
        minutes = max(1, round(wait / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return Busy(
            f"reelbot is busy: {total} jobs are waiting, the most it takes at once. "
            f"Please try again in about {minutes} {unit}.",
            retry_after=wait,
        )

    async def get(self, job_id: str) -> JobRecord:
        """A job's record, or ``JobNotFound``."""
        return await self.records.require(job_id)

    async def position(self, record: JobRecord) -> Position | None:
        """Where a queued or running job stands, and its ETA."""
        return await queue_position(self.redis, self.records, record)

    async def user_jobs(self, requester: Requester, *, limit: int = 20) -> list[JobRecord]:
        """A user's jobs, newest first."""
        key = keys.user_jobs(requester.platform, requester.user_id)
        ids = [i.decode() for i in await self.redis.zrevrange(key, 0, limit - 1)]
        return await self.records.many(ids)

    async def recent(self, *, limit: int = 20) -> list[JobRecord]:
        """The newest jobs of everyone, newest first."""
        ids = [i.decode() for i in await self.redis.zrevrange(keys.JOB_INDEX, 0, limit - 1)]
        return await self.records.many(ids)

    async def cancel(
        self, job_id: str, *, requester: Requester | None = None
    ) -> tuple[CancelOutcome, JobRecord]:
        """Cancel a job: a waiting one leaves the queue now, a running one stops at its next step.

        ``requester`` limits it to the user's own jobs, a server admin's to their server's, and
        owners' to none (``may_cancel``); None is the operator. Raises ``JobNotFound`` for an
        unknown job or one the requester may not cancel. Someone else's job cancelled by an
        admin or owner goes to the audit log.
        """
        record = await self.records.require(job_id)
        if requester is None or _owns(requester, record):
            return await self._stop(job_id, record)
        if not may_cancel(requester, record):
            raise JobNotFound(f"You have no job {job_id!r}.")
        outcome, latest = await self._stop(job_id, record)
        r = requester
        name = f" ({r.display_name})" if r.display_name else ""
        origin = f"{r.platform}:server:{r.server_id}" if r.server_id else f"{r.platform}:direct"
        await audit.record(
            self.redis,
            f"{r.platform}:user:{r.user_id}{name}",
            origin,
            "job cancel",
            server_scope(record.requester),
            f"job {job_id} of {record.requester.platform}:user:{record.requester.user_id} "
            f"({record.status.value})",
            outcome,
        )
        return outcome, latest

    async def _stop(self, job_id: str, record: JobRecord) -> tuple[CancelOutcome, JobRecord]:
        if record.finished:
            return "already_finished", record
        if record.status in (JobStatus.ENCODING, JobStatus.DELIVERING):
            return "too_late", record
        outcome = await self._cancel(
            keys=[
                record.queue,
                keys.arq_in_progress(job_id),
                keys.arq_job(job_id),
                keys.arq_retry(job_id),
                keys.cancel_flag(job_id),
            ],
            args=[job_id, CANCEL_FLAG_TTL_S, keys.CONTROL_CHANNEL, json.dumps({"cancel": job_id})],
        )
        if outcome == b"signalled":
            return "stopping", record
        cancelled = await self.records.transition(
            job_id,
            JobStatus.CANCELLED,
            only_from=[JobStatus.QUEUED],
            error_code=Cancelled.code,
            error_message=Cancelled.default_message,
        )
        if cancelled is None:
            # It left the queue some other way meanwhile (it ran, or it failed).
            latest = await self.records.require(job_id)
            return ("already_finished" if latest.finished else "too_late"), latest
        await publish(
            self.redis,
            cancelled.platform,
            ProgressEvent(job_id=job_id, status=JobStatus.CANCELLED, at=time.time()),
        )
        await enqueue_delivery(self.redis, cancelled)
        return "removed", cancelled
