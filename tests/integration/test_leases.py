"""A run that lost its lease (Redis away past it) ends without touching the job's queue state.

The Redis-outage fault test found this: after an outage longer than the lease, the worker that
had lost a job's lease claimed it again while the first run was still ending, the first run's
retry then deleted the second run's lease, a third run started, and when the second finished the
third found the job gone ("expired") and failed a job whose result was already stored. Each test
here takes one step of that, on a plain ``QueueWorker`` against the real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq import Retry
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.errors import WorkerLost
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.leases import MAX_TRIES, QueueWorker

from .conftest import StartWorkers, request, wait_for_record

pytestmark = pytest.mark.timeout(60)

QUEUE = "test:leases"
JOB = "lease-job"


class Gate:
    """What the job function does: count runs, block until the test lets it end."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.runs = 0
        self.release = asyncio.Event()
        self.outcome: Callable[[int], Any] = lambda run: "done"

    async def job(self, ctx: dict[str, Any]) -> Any:
        self.runs += 1
        run = self.runs
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
            return self.outcome(run)
        finally:
            self.running -= 1


class Watched(QueueWorker):
    """Records the leases it lost and the jobs it gave up (where reelbot's worker fails them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost: list[str] = []
        self.given_up: list[str] = []

    async def gave_up(self, job_id: str) -> None:
        self.given_up.append(job_id)

    def lease_lost(self, job_id: str) -> None:
        super().lease_lost(job_id)
        self.lost.append(job_id)


async def until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {within_s}s")


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def worker(redis: ArqRedis, gate: Gate) -> AsyncIterator[Watched]:
    """A worker with a 1 s lease renewed every 0.1 s, running ``gate.job`` once enqueued; two
    slots, as a generation worker has, so a poll may claim while the job still runs."""
    from arq.worker import func

    w = Watched(
        [func(gate.job, name="job")],
        redis=redis,
        queue=QUEUE,
        lease_s=1.0,
        heartbeat_s=0.1,
        poll_delay_s=0.05,
        max_jobs=2,
        close_redis=False,
    )
    task = asyncio.create_task(w.async_run())
    await redis.enqueue_job("job", _job_id=JOB, _queue_name=QUEUE)
    w.wake()
    await until(lambda: _true(gate.runs == 1), "the first run")
    yield w
    gate.release.set()
    await w.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


async def _lose_lease_to(
    redis: ArqRedis, worker: Watched, holder: str, *, for_ms: int = 60_000
) -> None:
    """Another worker takes the lease for ``for_ms``; wait until this worker has noticed."""
    await redis.set(keys.arq_in_progress(JOB), holder, px=for_ms)
    await until(lambda: _true(JOB in worker.lost), "the lease loss being noticed")


async def test_a_run_that_lost_its_lease_leaves_the_new_holders_job_alone(
    redis: ArqRedis, worker: Watched, gate: Gate
) -> None:
    """The new holder's lease, the job and its place in the queue survive the old run's end."""
    await _lose_lease_to(redis, worker, "peer:1:abc")
    score = await redis.zscore(QUEUE, JOB)
    gate.release.set()  # the old run ends as if its result were in
    await until(lambda: _true(gate.running == 0 and JOB not in worker.tasks), "the old run ending")
    await asyncio.sleep(0.2)
    assert await redis.get(keys.arq_in_progress(JOB)) == b"peer:1:abc"
    assert await redis.exists(f"arq:job:{JOB}") == 1
    assert await redis.zscore(QUEUE, JOB) == score
    assert worker.given_up == []


async def test_a_stale_retry_does_not_put_a_finished_job_back(
    redis: ArqRedis, worker: Watched, gate: Gate
) -> None:
    """The peer that took the job over finished it; the old run's retry must not revive it."""
    await _lose_lease_to(redis, worker, "peer:1:abc")
    # The peer finishes the job as arq does: definition, queue entry and lease gone.
    await redis.delete(f"arq:job:{JOB}", keys.arq_in_progress(JOB))
    await redis.zrem(QUEUE, JOB)

    def retry(run: int) -> None:
        raise Retry(defer=0.1)

    gate.outcome = retry
    gate.release.set()
    await until(lambda: _true(gate.running == 0 and JOB not in worker.tasks), "the old run ending")
    await asyncio.sleep(0.3)
    assert await redis.zscore(QUEUE, JOB) is None
    assert gate.runs == 1
    assert worker.given_up == []  # reelbot's worker would fail the job here


async def test_a_job_reclaimed_while_it_still_runs_here_is_not_started_twice(
    redis: ArqRedis, worker: Watched, gate: Gate
) -> None:
    """The lease lapsed and nobody took it: this worker's next poll takes the job back while
    its run goes on. It must not start a second run beside the first (arq's bookkeeping is one
    task per job id); the first ends the job, once."""
    await redis.delete(keys.arq_in_progress(JOB))
    await asyncio.sleep(0.5)  # several polls, each finding the job due and nobody holding it
    assert gate.runs == 1
    assert await redis.get(keys.arq_in_progress(JOB)) == worker.worker_id.encode()
    gate.release.set()
    await until(lambda: _true(gate.running == 0 and JOB not in worker.tasks), "the run ending")
    await asyncio.sleep(0.2)
    assert (gate.runs, gate.most_at_once) == (1, 1)
    assert await redis.zscore(QUEUE, JOB) is None
    assert await redis.exists(f"arq:job:{JOB}", keys.arq_in_progress(JOB)) == 0
    assert worker.given_up == []


async def test_a_run_stopped_for_its_lost_lease_runs_again_after_it_ended(
    redis: ArqRedis, worker: Watched, gate: Gate
) -> None:
    """The lease lapsed and the run noticed (it stops, as a generation does): the job goes back
    in line and runs again here once the first run has ended, never beside it."""
    # A holder whose lease lapses at once: the loss is noticed, then nobody holds the job.
    await _lose_lease_to(redis, worker, "peer:1:gone", for_ms=150)
    await asyncio.sleep(0.3)
    assert gate.runs == 1

    def retry_first(run: int) -> str:
        if run == 1:
            raise Retry(defer=0)
        return "done"

    gate.outcome = retry_first
    gate.release.set()
    await until(lambda: _true(gate.runs == 2), "the second run")
    await until(lambda: _true(gate.running == 0 and JOB not in worker.tasks), "the job ending")
    await asyncio.sleep(0.2)
    assert gate.most_at_once == 1
    assert await redis.zscore(QUEUE, JOB) is None
    assert await redis.exists(f"arq:job:{JOB}") == 0
    assert worker.given_up == []


async def test_a_job_that_used_up_its_tries_fails_clearly_unless_its_result_is_stored(
    queue: JobQueue, redis: ArqRedis, start_workers: StartWorkers
) -> None:
    """arq gives a job up after ``MAX_TRIES`` runs: the user is told why. A job whose result is
    already stored (delivering) is left to its delivery, however often its generation ran."""
    fresh = await queue.submit(request(Task.IMAGINE, "a lighthouse", "tries-fresh"))
    stored = await queue.submit(request(Task.IMAGINE, "a harbour", "tries-stored"))
    for status in (JobStatus.RUNNING, JobStatus.ENCODING, JobStatus.DELIVERING):
        assert await queue.records.transition(stored.record.id, status) is not None
    for job in (fresh, stored):
        await redis.set(keys.arq_retry(job.record.id), MAX_TRIES)
    await start_workers()

    failed = await wait_for_record(
        queue.records, fresh.record.id, lambda r: r.status == JobStatus.FAILED
    )
    assert failed.error_code == WorkerLost.code and "given up" in (failed.error_message or "")
    await until(lambda: _gone(redis, stored.record.id), "the stored job being given up")
    record = await queue.get(stored.record.id)
    assert record.status == JobStatus.DELIVERING and record.error_code is None


async def _gone(redis: ArqRedis, job_id: str) -> bool:
    return not await redis.exists(keys.arq_job(job_id))


async def test_a_job_claimed_while_closing_is_not_started_and_its_lease_given_back(
    redis: ArqRedis, worker: Watched, gate: Gate
) -> None:
    """A poll that claimed a job as ``close`` began (a delivery, in the Discord end-to-end test
    that found it) must not start it: nothing would wait for its run, whose end then opened a
    connection after the pool was closed. The job waits for the next worker, not for a lease."""
    other = "other-lease-job"
    await redis.enqueue_job("job", _job_id=other, _queue_name=QUEUE, _defer_by=3600)
    gate.release.set()
    await until(lambda: _true(JOB not in worker.tasks), "the first job ending")
    await worker.close()
    await redis.set(keys.arq_in_progress(other), worker.worker_id, px=60_000)
    await worker.start_claimed(other, 0)
    assert other not in worker.tasks and gate.runs == 1
    await asyncio.sleep(0.05)
    assert await redis.exists(keys.arq_in_progress(other)) == 0
    assert await redis.exists(keys.arq_job(other)) == 1
