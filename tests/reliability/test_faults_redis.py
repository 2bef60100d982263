"""Redis restarts (append-only file on) and goes away for a while, mid-run, repeatedly.

While it is away, a submission is refused with a clear "temporarily unavailable"; every job
accepted before or after is posted exactly once when it is back. ``REELBOT_OUTAGE_S`` sets the
outage (3 s here, 30 s in ``make soak``: longer than the Redis clients' own retries).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import (
    Posted,
    StartWorkers,
    delivered,
    make_settings,
    request,
    wait_for_record,
)
from reelbot.catalog import Catalog, Task
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect

from .conftest import REPEATS, SOAK, Figures

OUTAGE_S = float(os.environ.get("REELBOT_OUTAGE_S") or (30.0 if SOAK else 3.0))
REPS = range(REPEATS)

pytestmark = [
    pytest.mark.timeout(int(120 + OUTAGE_S)),
]


@pytest.fixture(autouse=True)
def _collect_leftovers() -> Iterator[None]:
    """Collect the clients of killed or restarted peers here, not in a later test."""
    yield
    gc.collect()


@pytest.fixture
def settings(own_server: RedisServer, data_dir: Path) -> Settings:
    """These tests stop and restart their own server."""
    return make_settings(own_server.url, data_dir)


@pytest.mark.parametrize("rep", REPS)
async def test_redis_restart_with_aof_mid_run(
    rep: int,
    own_server: RedisServer,
    queue: JobQueue,
    consumer: Posted,
    start_workers: StartWorkers,
    figures: Figures,
) -> None:
    """Restart the server while jobs run and wait: each is posted once afterwards."""
    tasks = [Task.IMAGINE, Task.VIDEO, Task.IMAGINE, Task.IMAGINE]
    ids = [
        (await queue.submit(request(t, f"scene {i}", f"restart-{rep}-{i}"))).record.id
        for i, t in enumerate(tasks)
    ]
    await start_workers()
    await wait_for_record(queue.records, ids[0], lambda r: r.status != JobStatus.QUEUED)
    await asyncio.to_thread(own_server.restart)
    restarted = time.monotonic()
    for job_id in ids:
        await wait_for_record(queue.records, job_id, delivered, within_s=90)
    recovery = time.monotonic() - restarted
    await asyncio.sleep(0.3)
    posts = {job_id: len(consumer.for_job(job_id)) for job_id in ids}
    figures.add("Redis restart (AOF)", accepted=len(ids), posts=posts, recovery_s=recovery)
    assert posts == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("rep", REPS)
async def test_redis_unreachable_refuses_clearly_and_loses_nothing(
    rep: int,
    own_server: RedisServer,
    settings: Settings,
    catalog: Catalog,
    queue: JobQueue,
    consumer: Posted,
    start_workers: StartWorkers,
    figures: Figures,
) -> None:
    """Redis down for ``OUTAGE_S``: "temporarily unavailable" to new requests, no job lost."""
    await start_workers()
    ids = [
        (await queue.submit(request(Task.IMAGINE, f"before {i}", f"out-{rep}-{i}"))).record.id
        for i in range(2)
    ]
    await asyncio.to_thread(own_server.stop)
    down = time.monotonic()
    # An adapter's submit while it is down (a client with few retries, to answer quickly).
    client = connect(settings.effective_redis_url, retries=2)
    try:
        with pytest.raises(BackendUnavailable) as refused:
            await JobQueue(client, settings, catalog).submit(
                request(Task.IMAGINE, "during", f"out-{rep}-during")
            )
    finally:
        await client.aclose(close_connection_pool=True)
    assert "temporarily unavailable" in refused.value.user_message
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
    await asyncio.to_thread(own_server.start)
    up = time.monotonic()
    ids.append((await queue.submit(request(Task.IMAGINE, "after", f"out-{rep}-after"))).record.id)
    for job_id in ids:
        await wait_for_record(queue.records, job_id, delivered, within_s=60)
    recovery = time.monotonic() - up
    await asyncio.sleep(0.3)
    posts = {job_id: len(consumer.for_job(job_id)) for job_id in ids}
    figures.add(
        f"Redis unreachable {OUTAGE_S:.0f} s", accepted=len(ids), posts=posts, recovery_s=recovery
    )
    assert posts == dict.fromkeys(ids, 1)
