"""/upscale through the real queue and worker, on the tiny set's upscaler."""

from __future__ import annotations

from io import BytesIO

import pytest
from arq.connections import ArqRedis
from PIL import Image

from reelbot.catalog import Task
from reelbot.errors import InvalidOption
from reelbot.jobs import Options
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.results import store_input

from .conftest import Posted, StartWorkers, delivered, request, wait_for_record

pytestmark = pytest.mark.timeout(120)


def _png(size: tuple[int, int]) -> bytes:
    buf = BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


async def test_an_upscale_job_comes_back_four_times_the_size(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    ref = await store_input(redis, _png((64, 48)))
    submitted = await queue.submit(
        request(Task.UPSCALE, "", "up-x4", image_ref=ref, options=Options(scale=4))
    )
    params = submitted.record.params
    assert (params.width, params.height) == (256, 192)
    assert params.cost == queue.catalog.upscaler().estimate_cost(width=256, height=192)
    await start_workers()

    record = await wait_for_record(queue.records, submitted.record.id, delivered, within_s=90)
    data = await redis.get(keys.result(record.id))
    assert data is not None
    image = Image.open(BytesIO(data))
    image.load()
    assert image.size == (256, 192)
    # The tiny network adds little to the nearest-upsampled input: still the same blue.
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert b > r and b > g
    [delivery] = consumer.for_job(record.id)
    assert delivery.data == data


async def test_an_image_at_the_cap_is_refused_before_it_is_queued(
    queue: JobQueue, redis: ArqRedis
) -> None:
    side = queue.settings.upscale_max_side
    ref = await store_input(redis, _png((side, 16)))
    with pytest.raises(InvalidOption, match=f"already {side}x16"):
        await queue.submit(request(Task.UPSCALE, "", "up-cap", image_ref=ref))
    assert await redis.zcard(queue.settings.image_queue) == 0
