"""Cancel while queued and while running; queue position, ETA and the global cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Catalog, Task
from reelbot.config import Settings
from reelbot.errors import Busy, JobNotFound
from reelbot.jobs import GenerationRequest, JobStatus, Requester, job_id_for
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.estimates import record_duration
from reelbot.store.progress import ProgressSubscription

from .conftest import (
    PLATFORM,
    Posted,
    StartWorkers,
    delivered,
    make_settings,
    request,
    wait_for_record,
)

pytestmark = pytest.mark.timeout(60)

SLOW_VIDEO = "a long shot of the sea --steps 8 --duration 4 --fps 8"


async def test_cancel_while_queued_removes_the_job(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    keep = await queue.submit(request(Task.IMAGINE, "keep me", "q-keep"))
    drop = await queue.submit(request(Task.IMAGINE, "drop me", "q-drop"))
    other = Requester(platform=PLATFORM, user_id="someone-else")
    with pytest.raises(JobNotFound):
        await queue.cancel(drop.record.id, requester=other)

    # The workers' model-affinity choice reads the job's model and cost from a small hash.
    mark = await redis.hgetall(keys.affinity(drop.record.id))
    assert mark[b"m"].decode() == drop.record.params.model
    assert float(mark[b"c"]) == drop.record.cost
    outcome, record = await queue.cancel(drop.record.id, requester=drop.record.requester)

    assert outcome == "removed"
    assert record.status == JobStatus.CANCELLED
    # What the workers' model-affinity choice reads of a queued job goes with it.
    assert not await redis.exists(keys.affinity(drop.record.id))
    assert await redis.zscore(queue.settings.image_queue, drop.record.id) is None
    assert not await redis.exists(keys.arq_job(drop.record.id))
    await start_workers()
    await wait_for_record(queue.records, keep.record.id, delivered)
    assert not await redis.exists(keys.affinity(keep.record.id))
    cancelled = await wait_for_record(
        queue.records, drop.record.id, lambda r: r.posted_at is not None
    )
    # It never ran; the user got one notice and no result.
    assert cancelled.attempts == 0 and cancelled.status == JobStatus.CANCELLED
    assert [d.kind for d in consumer.for_job(drop.record.id)] == ["notice"]
    again, _ = await queue.cancel(drop.record.id)
    assert again == "already_finished"


async def test_cancel_while_running_stops_the_pipeline(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    await start_workers()
    async with ProgressSubscription(redis, PLATFORM) as events:
        job = await queue.submit(request(Task.VIDEO, SLOW_VIDEO, "r-cancel"))
        job_id = job.record.id
        # Cancel at the first denoising step: seven more steps and the decode would follow.
        async with asyncio.timeout(30):
            async for event in events:
                if event.job_id == job_id and event.stage == "denoising":
                    break
        assert event.step < event.total
        outcome, _ = await queue.cancel(job_id)

    assert outcome == "stopping"
    record = await wait_for_record(queue.records, job_id, lambda r: r.posted_at is not None)
    assert record.status == JobStatus.CANCELLED
    assert record.result is None and JobStatus.ENCODING not in record.times
    assert not await redis.exists(keys.result(job_id))
    assert [d.kind for d in consumer.for_job(job_id)] == ["notice"]
    # The GPU is free again: the next job runs.
    after = await queue.submit(request(Task.IMAGINE, "next", "r-after"))
    await wait_for_record(queue.records, after.record.id, delivered)


async def test_position_and_eta_while_several_wait(queue: JobQueue, redis: ArqRedis) -> None:
    # No worker: everything waits. History says each image takes 2 s per credit.
    for _ in range(3):
        await record_duration(redis, "tiny-zimage", 2.0 * 0.02, 0.02)
    jobs = [await queue.submit(request(Task.IMAGINE, f"picture {i}", f"pos-{i}")) for i in range(4)]

    positions = [j.position for j in jobs]
    assert all(p is not None for p in positions)
    assert [p.position for p in positions if p] == [1, 2, 3, 4]
    etas = [p.eta_s for p in positions if p]
    assert etas == sorted(etas) and etas[0] > 0
    # With one (assumed) worker, each job ahead adds one job's estimate to the wait.
    step = etas[1] - etas[0]
    assert step == pytest.approx(etas[0], rel=0.01)
    # Video jobs are in their own queue and do not stand in line with images.
    video = await queue.submit(request(Task.VIDEO, "a wave", "pos-video"))
    assert video.position is not None and video.position.position == 1
    # Cancelling the first moves everyone up.
    await queue.cancel(jobs[0].record.id)
    moved = await queue.position(await queue.get(jobs[3].record.id))
    assert moved is not None and moved.position == 3


async def test_global_cap_answers_busy_with_a_retry_hint(
    server_url_settings: Settings, catalog: Catalog, redis: ArqRedis
) -> None:
    capped = JobQueue(redis, server_url_settings, catalog)
    for i in range(3):
        await capped.submit(request(Task.IMAGINE if i % 2 else Task.VIDEO, f"p{i}", f"cap-{i}"))
    with pytest.raises(Busy) as caught:
        await capped.submit(request(Task.IMAGINE, "one too many", "cap-3"))
    assert caught.value.retry_after is not None and caught.value.retry_after >= 10
    assert "try again" in caught.value.user_message
    refused = request(Task.IMAGINE, "one too many", "cap-3")
    assert await capped.records.get(keys_job_id(refused)) is None
    # A duplicate of an accepted job is not a new job, so the cap does not refuse it.
    again = await capped.submit(request(Task.VIDEO, "p0", "cap-0"))
    assert not again.created


def keys_job_id(req: GenerationRequest) -> str:
    """The job id a request gets."""
    return job_id_for(req.requester.platform, req.source_id)


@pytest.fixture
def server_url_settings(settings: Settings) -> Settings:
    """The test's settings with a global cap of 3 queued jobs."""
    return make_settings(settings.effective_redis_url, settings.data_dir, max_queued=3)


async def test_a_cancel_after_the_last_step_wins_over_the_post(
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    start_workers: StartWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race of a cancel with the last denoising step: the pipeline has returned, the cancel
    is accepted ("stopping") before the result is encoded. The job must then end cancelled,
    refunded and unposted, never with a result after the user was told it is stopping."""
    from reelbot.worker.worker import GenerationWorker

    answers: list[str] = []
    finish = GenerationWorker._finish

    async def cancel_then_finish(self: GenerationWorker, record: Any, *args: Any) -> None:
        outcome, _ = await queue.cancel(record.id)
        answers.append(outcome)
        await finish(self, record, *args)

    monkeypatch.setattr(GenerationWorker, "_finish", cancel_then_finish)
    await start_workers()
    job = await queue.submit(request(Task.IMAGINE, "a fox at the last step", "r-last-step"))
    record = await wait_for_record(queue.records, job.record.id, lambda r: r.posted_at is not None)

    assert answers == ["stopping"]
    assert record.status == JobStatus.CANCELLED and record.result is None
    assert [d.kind for d in consumer.for_job(job.record.id)] == ["notice"]
    assert not await redis.exists(keys.result(job.record.id))
    status = await queue.quotas.status(job.record.requester)
    assert status.used == 0
