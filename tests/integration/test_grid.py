"""A grid through the real queue and worker: one grid result, four tiles, n× the cost."""

from __future__ import annotations

import io

import pytest
from arq.connections import ArqRedis
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.errors import QuotaExceeded
from reelbot.jobs import resolve
from reelbot.queue.submit import JobQueue
from reelbot.store.results import RedisResultStore

from .conftest import Posted, StartWorkers, delivered, request, wait_for_record

pytestmark = pytest.mark.timeout(120)


async def test_imagine_n4_delivers_a_grid_with_four_decodable_tiles(
    queue: JobQueue,
    redis: ArqRedis,
    catalog: Catalog,
    consumer: Posted,
    start_workers: StartWorkers,
) -> None:
    await start_workers()
    submitted = await queue.submit(request("imagine", "a fox --n 4 --seed 9 --steps 2", "grid-1"))
    params = submitted.record.params
    assert params.count == 4
    record = await wait_for_record(queue.records, submitted.record.id, delivered, within_s=90)
    assert record.result is not None
    store = RedisResultStore(redis, ttl_s=60)
    grid = await store.get(record.result.ref)
    assert grid is not None
    assert Image.open(io.BytesIO(grid)).size == (2 * params.width, 2 * params.height)
    assert len(record.result.tiles) == 4
    refs = {tile.ref for tile in record.result.tiles}
    assert len(refs) == 4 and record.result.ref not in refs
    for tile in record.result.tiles:
        data = await store.get(tile.ref)
        assert data is not None
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.size == (params.width, params.height) == (tile.width, tile.height)
    # Posted once, as one result (the grid).
    assert len(consumer.for_job(record.id)) == 1


async def test_a_grid_over_the_budget_is_refused_before_it_is_queued(
    queue: JobQueue, redis: ArqRedis, catalog: Catalog
) -> None:
    one = resolve(Task.IMAGINE, "a fox", catalog).cost
    user = f"{request('imagine', 'x', 's').requester.platform}:user:u1"
    await queue.quotas.change(user, {"daily": 3 * one}, actor="test")
    with pytest.raises(QuotaExceeded) as refused:
        await queue.submit(request("imagine", "a fox --n 4", "grid-over"))
    assert "left today" in refused.value.user_message
    assert await redis.zcard(queue.settings.image_queue) == 0
    # Three images fit, as one grid.
    fits = await queue.submit(request("imagine", "a fox --n 3", "grid-fits"))
    assert fits.record.cost == pytest.approx(3 * one)
    assert await redis.zcard(queue.settings.image_queue) == 1
