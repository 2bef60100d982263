"""Submit → worker → stored result → delivery, on a real server with the tiny models."""

from __future__ import annotations

import asyncio
from io import BytesIO
from typing import Any

import pytest
from arq.connections import ArqRedis
from PIL import Image
from redis.exceptions import ConnectionError as RedisConnectionError

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.errors import OutOfMemory
from reelbot.generation.media import probe_video
from reelbot.jobs import JobStatus
from reelbot.queue import delivery as delivery_module
from reelbot.queue.delivery import Delivery, DeliveryConsumer, enqueue_delivery
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.connection import connect
from reelbot.store.progress import ProgressEvent, ProgressSubscription, latest
from reelbot.store.results import store_input

from .conftest import PLATFORM, Posted, StartWorkers, delivered, request, wait_for_record

pytestmark = pytest.mark.timeout(60)


def _png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (80, 60), color).save(buf, "PNG")
    return buf.getvalue()


def _mp4(frames: int = 9) -> bytes:
    """A short clip of a moving bar: a video to restyle, smooth or extend."""
    from reelbot.generation.media import encode_video

    clip = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(frames)]
    return encode_video(clip, fps=8, max_bytes=10**7).data


def _mask() -> bytes:
    buf = BytesIO()
    mask = Image.new("L", (80, 60), 0)
    mask.paste(255, (20, 15, 60, 45))  # white: the part to paint again
    mask.save(buf, "PNG")
    return buf.getvalue()


async def _inputs(redis: ArqRedis, task: Task) -> dict[str, Any]:
    """What each task starts from, stored as an adapter stores it."""
    refs: dict[str, Any] = {}
    if task.needs_image:
        refs["image_ref"] = await store_input(redis, _png())
    if task.needs_video:
        refs["video_ref"] = await store_input(redis, _mp4())
    if task == Task.INPAINT:
        refs["mask_ref"] = await store_input(redis, _mask())
    if task in (Task.BLEND, Task.KEYFRAMES):
        refs["more_refs"] = (await store_input(redis, _png((30, 30, 200))),)
    return refs


@pytest.mark.parametrize("task", list(Task))
async def test_each_task_is_stored_and_delivered(
    task: Task,
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    start_workers: StartWorkers,
) -> None:
    refs = await _inputs(redis, task)
    # /describe writes prompts and /smooth only adds frames: no prompt for either.
    text = "--seed 7" if task in (Task.DESCRIBE, Task.SMOOTH) else "a red fox --seed 7"
    if task in (Task.SMOOTH, Task.UPSCALE_VIDEO):  # a video's Upscale takes no words either
        text = ""
    submitted = await queue.submit(request(task, text, f"src-{task}", **refs))
    assert submitted.created
    assert submitted.record.queue == queue.settings.queue_for(task)
    await start_workers()

    record = await wait_for_record(queue.records, submitted.record.id, delivered)

    # The whole lifecycle was walked, in order, by one run.
    order = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.ENCODING, JobStatus.DELIVERING]
    times = [record.times[s] for s in [*order, JobStatus.DELIVERED]]
    assert times == sorted(times)
    assert record.attempts == 1
    assert record.worker_id is not None
    # The stored result decodes as what the task makes.
    assert record.result is not None
    data = await redis.get(keys.result(record.id))
    assert data is not None and len(data) == record.result.size
    if task == Task.SMOOTH:  # the 9 frames of the clip, doubled
        assert probe_video(data).frames == record.result.frames == 18
    elif task.is_video:
        info = probe_video(data)
        assert info.codec == "h264"
        assert (info.width, info.height) == (record.result.width, record.result.height)
        assert record.result.frames == record.params.frames > 1
        if task == Task.RESTYLE:  # the clip's 16:9 as near as the tiny model's sizes go
            assert info.width > info.height
        if task == Task.UPSCALE_VIDEO:  # the 128x72 clip twice as large, every frame of it
            assert (info.width, info.height, info.frames) == (256, 144, 9)
            assert record.result.note.startswith("Upscaled x2 (256×144)")
    else:
        image = Image.open(BytesIO(data))
        image.load()
        assert image.format == "PNG"
        assert image.size == (record.params.width, record.params.height)
    if task == Task.DESCRIBE:  # four suggestions, numbered in the caption
        assert len(record.result.texts) == 4 and all(record.result.texts)
        assert record.result.note.startswith("1. ")
    # Posted once, with the bytes and an idempotency key.
    [delivery] = consumer.for_job(record.id)
    assert delivery.kind == "result"
    assert delivery.data == data
    assert delivery.idempotency_key
    assert record.posted_message_id == "m1"


async def test_duplicate_submit_makes_one_job_and_one_delivery(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    first = await queue.submit(request(Task.IMAGINE, "a cat", "update-1"))
    again = await queue.submit(request(Task.IMAGINE, "a cat", "update-1"))
    assert first.created and not again.created
    assert again.record.id == first.record.id
    assert await redis.zcard(queue.settings.image_queue) == 1
    await start_workers()
    record = await wait_for_record(queue.records, first.record.id, delivered)
    # The same update arriving after the job finished is still the same job.
    late = await queue.submit(request(Task.IMAGINE, "a cat", "update-1"))
    assert not late.created and late.record.status == JobStatus.DELIVERED
    assert record.attempts == 1
    # A delivery job run again (a consumer crash, a duplicate enqueue) posts nothing more.
    await enqueue_delivery(redis, record)
    rerun = keys.arq_job(keys.delivery_job_id(record.id))
    assert await redis.exists(rerun)
    for _ in range(500):  # until the consumer has run it
        if not await redis.exists(rerun):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the re-enqueued delivery never ran")
    assert len(consumer.for_job(record.id)) == 1
    assert len(consumer.deliveries) == 1


async def test_a_user_error_fails_at_once_and_is_not_retried(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    ref = await store_input(redis, b"GIF89a not really an image")
    submitted = await queue.submit(request(Task.REMIX, "make it blue", "bad-image", image_ref=ref))
    await start_workers()
    record = await wait_for_record(
        queue.records, submitted.record.id, lambda r: r.posted_at is not None
    )
    assert record.status == JobStatus.FAILED
    assert record.error_code == "invalid_image"
    assert record.error_message and "image" in record.error_message.lower()
    assert record.attempts == 0  # it never reached the pipeline
    [notice] = consumer.for_job(record.id)
    assert notice.kind == "notice" and notice.data is None


class _OutOfMemoryFirst:
    """Fault injection: the real runner, but the first ``failures`` calls run out of memory."""

    def __init__(self, real: object, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def preload(self, *args: object, **kwargs: object) -> None:
        self.real.preload(*args, **kwargs)  # type: ignore[attr-defined]

    def generate(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise OutOfMemory("CUDA out of memory (injected)")
        return self.real.generate(*args, **kwargs)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("failures", "outcome"), [(1, JobStatus.DELIVERED), (2, JobStatus.FAILED)])
async def test_out_of_memory_is_retried_once_then_fails_clearly(
    failures: int,
    outcome: JobStatus,
    queue: JobQueue,
    consumer: Posted,
    start_workers: StartWorkers,
    runner: object,
) -> None:
    flaky = _OutOfMemoryFirst(runner, failures)
    submitted = await queue.submit(request(Task.IMAGINE, "a big picture", f"oom-{failures}"))
    await start_workers(flaky)
    record = await wait_for_record(
        queue.records, submitted.record.id, lambda r: r.posted_at is not None
    )
    assert record.status == outcome
    assert flaky.calls == 2
    assert record.attempts == 2
    if outcome == JobStatus.FAILED:
        assert record.error_code == "out_of_memory"
        assert record.error_message == OutOfMemory().user_message
        assert consumer.for_job(record.id)[0].kind == "notice"
    else:
        assert consumer.for_job(record.id)[0].kind == "result"


async def test_progress_reaches_the_adapter_throttled_at_the_source(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, start_workers: StartWorkers
) -> None:
    await start_workers()
    text = "a river at dusk --steps 8 --duration 4 --fps 8"
    seen: list[ProgressEvent] = []
    async with ProgressSubscription(redis, PLATFORM) as events:
        job = await queue.submit(request(Task.VIDEO, text, "progress-1"))
        async with asyncio.timeout(30):
            async for event in events:
                if event.job_id == job.record.id:
                    seen.append(event)
                    if event.status == JobStatus.DELIVERED:
                        break

    statuses = list(dict.fromkeys(e.status for e in seen))
    assert statuses == [
        JobStatus.RUNNING,
        JobStatus.ENCODING,
        JobStatus.DELIVERING,
        JobStatus.DELIVERED,
    ]
    steps = [e for e in seen if e.stage == "denoising"]
    # Eight steps in well under the 0.5 s throttle: the first and the last get through.
    assert steps[0].step == 1 and steps[-1].step == steps[-1].total == 8
    assert len(steps) < 8
    assert any(e.stage == "decoding" for e in seen)
    last = await latest(redis, job.record.id)
    assert last is not None and last.status == JobStatus.DELIVERED


async def test_a_mark_lost_to_redis_is_written_later_without_a_second_post(
    settings: Settings,
    queue: JobQueue,
    start_workers: StartWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis fails right after the platform accepted the post: the retry writes the mark and
    posts nothing again (the soak once saw a result posted twice this way)."""
    monkeypatch.setattr(delivery_module, "RETRY_BASE_S", 0.1)
    posted = Posted()

    async def post(delivery: Delivery) -> str:
        posted.deliveries.append(delivery)
        return f"m{len(posted.deliveries)}"

    client = connect(settings.effective_redis_url)
    consumer = DeliveryConsumer(client, PLATFORM, post, settings=settings)
    write_mark = consumer._write_mark
    failures = [RedisConnectionError("Connection closed by server.")]

    async def flaky(job_id: str, message_id: str | None, attempt: int) -> None:
        if failures:
            raise failures.pop()
        await write_mark(job_id, message_id, attempt)

    monkeypatch.setattr(consumer, "_write_mark", flaky)
    task = asyncio.create_task(consumer.async_run())
    try:
        await start_workers()
        job = await queue.submit(request(Task.IMAGINE, "a fox", "mark-lost"))
        record = await wait_for_record(queue.records, job.record.id, delivered)
    finally:
        await consumer.close()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose(close_connection_pool=True)
    assert failures == []
    assert len(posted.for_job(job.record.id)) == 1
    assert record.posted_message_id == "m1" and record.post_attempts == 2
