"""The Redis server crashes and restarts mid-run: its append-only file keeps every accepted job.

With ``appendfsync everysec`` a crash can lose the last second of writes, so the jobs are
submitted, then given a second to reach the disk, before the server is SIGKILLed mid-run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer

from .conftest import Posted, StartWorkers, delivered, make_settings, request, wait_for_record

pytestmark = pytest.mark.timeout(120)

JOBS = 8
FSYNC_WAIT_S = 1.5


@pytest.fixture
def settings(own_server: RedisServer, data_dir: Path) -> Settings:
    """This module's tests run on a server of their own, which they crash."""
    return make_settings(own_server.url, data_dir)


async def test_no_accepted_job_is_lost_when_redis_crashes_mid_run(
    own_server: RedisServer, queue: JobQueue, consumer: Posted, start_workers: StartWorkers
) -> None:
    tasks = [Task.IMAGINE, Task.VIDEO] * (JOBS // 2)
    jobs = [
        await queue.submit(request(task, f"scene {i}", f"crash-{i}"), with_position=False)
        for i, task in enumerate(tasks)
    ]
    ids = [j.record.id for j in jobs]
    await asyncio.sleep(FSYNC_WAIT_S)
    await start_workers()
    await wait_for_record(queue.records, ids[0], lambda r: r.status != JobStatus.QUEUED)

    # Crash mid-run: some jobs done, one running, the rest waiting.
    await asyncio.to_thread(own_server.stop, kill=True)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_server.start)

    finished = [await wait_for_record(queue.records, i, delivered, within_s=90) for i in ids]
    assert [r.status for r in finished] == [JobStatus.DELIVERED] * JOBS
    for record in finished:
        posts = consumer.for_job(record.id)
        assert posts and all(p.kind == "result" for p in posts)
    # Writes of the last second before the crash may be replayed (a post whose "posted" mark
    # was lost is posted again, under the same idempotency key); nothing is lost.
    assert len(consumer.deliveries) >= JOBS
    assert {d.idempotency_key for d in consumer.deliveries} == {f"reelbot-{i}-result" for i in ids}
