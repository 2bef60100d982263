"""The job record: one JSON document per job in Redis, updated by compare-and-set.

Adapters, workers, delivery consumers and the operator CLI all read and change the same
record; each change is a pure function of the current record, applied with an optimistic
version check so that two writers never lose each other's update. What must follow a change of
status (settling the job's quota reservation) is the business of whoever owns it: a store is
given ``on_status`` hooks, which run after each compare-and-set that moved a record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from reelbot.errors import JobNotFound
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus, Requester
from reelbot.store import keys

__all__ = [
    "ACTIVE_TTL_S",
    "JobRecord",
    "RecordStore",
    "ResultInfo",
    "StaleRecord",
    "StatusHook",
]

ACTIVE_TTL_S = 7 * 24 * 3600
"""A safety net: an unfinished record disappears after a week even if every process died."""
_CAS_TRIES = 50

# Compare-and-set on the record's version: one round trip, no WATCH connection to hold.
_CAS = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if tonumber(cjson.decode(current)['version']) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # RUNNING again: a re-run after the worker died mid-job (its record still says running).
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.ENCODING,
            JobStatus.CANCELLED,
            JobStatus.FAILED,
        }
    ),
    JobStatus.ENCODING: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DELIVERING, JobStatus.FAILED}
    ),
    JobStatus.DELIVERING: frozenset({JobStatus.DELIVERED, JobStatus.FAILED}),
    JobStatus.DELIVERED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class StaleRecord(RuntimeError):
    """The record kept changing under a compare-and-set; should not happen outside a storm."""


class ResultInfo(BaseModel):
    """Where an encoded result is stored and what it is."""

    model_config = ConfigDict(frozen=True)

    ref: str
    mime: str
    ext: str
    size: int
    width: int
    height: int
    frames: int = 1
    fps: float | None = None
    note: str = ""
    spoiler: bool = Field(default=False, description="post behind the platform's spoiler")
    nsfw_score: float | None = Field(default=None, description="the classifier's highest score")
    tiles: tuple[ResultInfo, ...] = Field(
        default=(), description="a grid's images alone, in seed order (empty for one image)"
    )
    texts: tuple[str, ...] = Field(
        default=(), description="/describe's prompt suggestions (the result is the image)"
    )


class JobRecord(BaseModel):
    """Everything known about one job, from submit to delivery."""

    model_config = ConfigDict(frozen=True)

    id: str
    version: int = 0
    status: JobStatus = JobStatus.QUEUED
    queue: str
    request: GenerationRequest
    params: GenerationParams
    created_at: float
    updated_at: float
    times: dict[JobStatus, float] = Field(
        default_factory=dict, description="when the job last entered each status"
    )
    attempts: int = Field(default=0, description="pipeline runs started")
    batch_size: int = Field(default=1, description="jobs in the last run's pipeline call")
    transient_retries: int = 0
    worker_id: str | None = None
    timeout_s: float | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = Field(default=None, description="fit to show the user")
    error_ref: str | None = Field(default=None, description="log reference of an internal error")
    note: str = ""
    result: ResultInfo | None = None
    posted_at: float | None = None
    posted_message_id: str | None = None
    post_attempts: int = 0

    @property
    def requester(self) -> Requester:
        """Who asked."""
        return self.request.requester

    @property
    def platform(self) -> str:
        """The platform the result goes back to."""
        return self.request.reply.platform

    @property
    def cost(self) -> float:
        """The job's estimated cost in credits."""
        return self.params.cost

    @property
    def finished(self) -> bool:
        """Whether the job will not change status any more."""
        return self.status.finished

    def can_become(self, status: JobStatus) -> bool:
        """Whether the lifecycle allows moving from the current status to ``status``."""
        return status in _NEXT[self.status]

    def moved(self, status: JobStatus, *, now: float | None = None, **fields: Any) -> JobRecord:
        """A copy in ``status`` with ``fields`` changed (no lifecycle check; see ``can_become``)."""
        at = time.time() if now is None else now
        times = {**self.times, status: at}
        return self.model_copy(update={"status": status, "times": times, **fields})


class StatusHook(Protocol):
    """Runs after a compare-and-set moved a record to another status (``quotas.settle_moved``)."""

    async def __call__(self, redis: Redis, before: JobRecord, after: JobRecord) -> None: ...


class RecordStore:
    """Read and change job records in Redis."""

    def __init__(
        self, redis: Redis, *, finished_ttl_s: int, on_status: Sequence[StatusHook] = ()
    ) -> None:
        self.redis = redis
        self.finished_ttl_s = finished_ttl_s
        self.on_status = tuple(on_status)
        """Awaited in order after every change of status made through this store."""

    def ttl_for(self, record: JobRecord) -> int:
        """Finished records live as long as results; open ones have a long safety-net TTL."""
        return self.finished_ttl_s if record.finished else ACTIVE_TTL_S

    async def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when there is none."""
        raw = await self.redis.get(keys.record(job_id))
        return None if raw is None else JobRecord.model_validate_json(raw)

    async def require(self, job_id: str) -> JobRecord:
        """The record, or ``JobNotFound``."""
        record = await self.get(job_id)
        if record is None:
            raise JobNotFound(f"There is no job {job_id!r} (or it finished long ago).")
        return record

    async def many(self, job_ids: Iterable[str]) -> list[JobRecord]:
        """The records that still exist, in the order asked."""
        ids = list(job_ids)
        if not ids:
            return []
        raws = await self.redis.mget([keys.record(i) for i in ids])
        return [JobRecord.model_validate_json(r) for r in raws if r is not None]

    async def update(
        self, job_id: str, change: Callable[[JobRecord], JobRecord | None]
    ) -> JobRecord | None:
        """Apply ``change`` to the current record atomically; it returns None to leave it be.

        Returns the record as stored afterwards, or None when there is no record.
        """
        for _ in range(_CAS_TRIES):
            current = await self.get(job_id)
            if current is None:
                return None
            changed = change(current)
            if changed is None:
                return current
            new = changed.model_copy(
                update={"version": current.version + 1, "updated_at": time.time()}
            )
            done = await self.redis.eval(  # type: ignore[misc]
                _CAS,
                1,
                keys.record(job_id),
                str(current.version),
                new.model_dump_json(),
                str(self.ttl_for(new)),
            )
            if done == 1:
                if new.status != current.status:
                    if new.finished:
                        # Its model and marks are for the workers' choice of a queued job.
                        await self.redis.delete(keys.affinity(job_id))
                    for hook in self.on_status:
                        await hook(self.redis, current, new)
                return new
            if done == -1:
                return None
        raise StaleRecord(f"job {job_id}: the record kept changing; gave up after {_CAS_TRIES}")

    async def transition(
        self,
        job_id: str,
        status: JobStatus,
        *,
        only_from: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        """Move a job to ``status`` if the lifecycle (and ``only_from``) allows; else no change.

        Returns the new record, or None when the move was not allowed or there is no record.
        """
        allowed = frozenset(only_from) if only_from is not None else None
        applied = False

        def change(record: JobRecord) -> JobRecord | None:
            nonlocal applied
            # Decided afresh on every compare-and-set try: only the last try counts.
            applied = record.can_become(status) and (allowed is None or record.status in allowed)
            return record.moved(status, **fields) if applied else None

        stored = await self.update(job_id, change)
        return stored if applied else None
