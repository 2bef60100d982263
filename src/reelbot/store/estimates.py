"""Run-time estimates: a moving average per model, queue position and ETA, job timeouts.

Durations are kept as seconds per credit, the average of each model's last runs. A job's cost
already scales with its pixels, steps and frames, so one number per model predicts a 4-step
image and a 33-frame video of the same model alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from reelbot.jobs import JobStatus
from reelbot.store import keys
from reelbot.store.leases import live_workers
from reelbot.store.records import JobRecord, RecordStore

__all__ = [
    "Position",
    "estimate_s",
    "job_timeout_s",
    "queue_position",
    "record_duration",
    "seconds_per_credit",
]

SAMPLES = 20
MIN_COST = 0.01
"""Tiny jobs round to a cost of 0; their time still counts."""
UNKNOWN_SECONDS_PER_CREDIT = 15.0
"""A model with no history yet: about a 512² image on a mid-range GPU, for ETAs only."""
MIN_TIMEOUT_S = 120.0
"""Covers a cold model load and a slow first step, whatever the estimate says."""
UNKNOWN_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Position:
    """Where a job stands: 0 while it runs, 1 when it is next, and the expected wait."""

    position: int
    ahead: int
    eta_s: float
    workers: int


async def record_duration(redis: Redis, model: str, seconds: float, cost: float) -> None:
    """Add one run (pipeline time only) to the model's moving average."""
    key = keys.durations(model)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, f"{seconds / max(cost, MIN_COST):.6f}")
        pipe.ltrim(key, 0, SAMPLES - 1)
        await pipe.execute()


async def seconds_per_credit(redis: Redis, models: Iterable[str]) -> dict[str, float | None]:
    """Each model's average seconds per credit over its recent runs (None: no runs yet)."""
    names = sorted(set(models))
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lrange(keys.durations(name), 0, SAMPLES - 1)
        samples = await pipe.execute()
    out: dict[str, float | None] = {}
    for name, values in zip(names, samples, strict=True):
        numbers = [float(v) for v in values]
        out[name] = sum(numbers) / len(numbers) if numbers else None
    return out


def estimate_s(spc: float | None, cost: float) -> float:
    """Expected pipeline seconds of a job."""
    return (spc if spc is not None else UNKNOWN_SECONDS_PER_CREDIT) * max(cost, MIN_COST)


def job_timeout_s(spc: float | None, cost: float, factor: float) -> float:
    """A job's time limit: ``factor`` times its estimate, never under ``MIN_TIMEOUT_S``."""
    if spc is None:
        return UNKNOWN_TIMEOUT_S
    return max(MIN_TIMEOUT_S, factor * spc * max(cost, MIN_COST))


async def queue_position(redis: Redis, store: RecordStore, record: JobRecord) -> Position | None:
    """The job's place in its queue and its ETA; None once it has left the queue.

    The wait is the work ahead of it (queued jobs' estimates plus what the running ones still
    need) shared among the live workers on the queue.
    """
    if record.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return None
    entries = await redis.zrange(record.queue, 0, -1)
    ids = [e.decode() for e in entries]
    if record.id not in ids:
        return None
    ahead_ids = ids[: ids.index(record.id)]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in [*ahead_ids, record.id]:
            pipe.exists(keys.arq_in_progress(job_id))
        held = await pipe.execute()
    records = {r.id: r for r in await store.many(ahead_ids)}
    records[record.id] = record
    spc = await seconds_per_credit(redis, {r.params.model for r in records.values()})
    now = time.time()

    def remaining(r: JobRecord, running: bool) -> float:
        full = estimate_s(spc[r.params.model], r.cost)
        started = r.times.get(JobStatus.RUNNING) if running else None
        return max(0.0, full - (now - started)) if started else full

    workers = max(1, len(await live_workers(redis, record.queue)))
    work = 0.0
    waiting = 0
    for job_id, running in zip(ahead_ids, held, strict=False):
        r = records.get(job_id)
        if r is None:
            continue
        work += remaining(r, bool(running))
        waiting += 0 if running else 1
    if held[-1] and record.status == JobStatus.RUNNING:
        return Position(0, 0, remaining(record, True), workers)
    eta = work / workers + estimate_s(spc[record.params.model], record.cost)
    return Position(waiting + 1, waiting, eta, workers)
