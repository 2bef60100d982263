"""Compatible image jobs waiting together run as one pipeline call, each still its own job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq.connections import ArqRedis
from PIL import Image

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.progress import ProgressSubscription
from reelbot.store.records import JobRecord
from reelbot.worker.worker import PipelineRunner, serve_generation

from .conftest import (
    PLATFORM,
    REPO,
    Posted,
    SlowSteps,
    StartWorkers,
    delivered,
    make_settings,
    request,
    tail,
    wait_for_record,
)

pytestmark = pytest.mark.timeout(90)

# Same model, size and steps: one batch. Different prompts and seeds: different images.
PROMPTS = [
    "a red fox --seed 1 --steps 3",
    "a blue whale in the deep ocean at night --seed 7 --steps 3",
    "ok --seed 3 --steps 3",
]
OTHER_SIZE = "a tall tower --seed 5 --steps 3 --ar 1:2"
STEP_DELAY_S = 0.25


@asynccontextmanager
async def serving(settings: Settings, runner: PipelineRunner) -> AsyncIterator[None]:
    """A generation worker process's insides on the image queue, stopped on exit."""
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_generation(
            settings,
            runner,
            [settings.image_queue],
            redis_url=settings.effective_redis_url,
            stop=stop,
            ready=ready.set_result,
        )
    )
    await ready
    try:
        yield
    finally:
        stop.set()
        await task


def batched(settings: Settings, size: int = 3) -> Settings:
    """The test's settings with batching on."""
    return make_settings(settings.effective_redis_url, settings.data_dir, batch_max=size)


def _pixels(data: bytes | None) -> np.ndarray:
    assert data is not None
    return np.asarray(Image.open(BytesIO(data)).convert("RGB")).astype(np.int16)


def _assert_same_image(batched: np.ndarray, alone: np.ndarray) -> None:
    # As tests/unit/test_batching.py: float32 sums in another order in a batched matmul, so a
    # value on a rounding edge can move one level after the VAE.
    assert batched.shape == alone.shape
    diff = np.abs(batched - alone)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


async def _submit_all(queue: JobQueue, texts: Sequence[str], tag: str) -> list[str]:
    ids = []
    for i, text in enumerate(texts):
        submitted = await queue.submit(request(Task.IMAGINE, text, f"{tag}-{i}"))
        ids.append(submitted.record.id)
    return ids


async def _delivered_all(queue: JobQueue, ids: Sequence[str]) -> list[JobRecord]:
    return [await wait_for_record(queue.records, job_id, delivered) for job_id in ids]


async def test_waiting_compatible_jobs_run_as_one_batch_with_the_same_images(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, settings: Settings, runner: PipelineRunner
) -> None:
    first, second, third = await _submit_all(queue, PROMPTS, "batch")
    [other] = await _submit_all(queue, [OTHER_SIZE], "other")
    # Queued behind the others, and only compatible with them: it joins their batch.
    [fourth] = await _submit_all(queue, [PROMPTS[0].replace("fox", "cat")], "late")
    async with serving(batched(settings), runner):
        records = await _delivered_all(queue, [first, second, third, other, fourth])
    together, alone = records[:3], records[3]
    assert [r.batch_size for r in together] == [3, 3, 3]
    assert len({r.worker_id for r in together}) == 1
    starts = [r.times[JobStatus.RUNNING] for r in together]
    assert max(starts) - min(starts) < 0.5
    # A different size never shares a call; the fourth compatible job waited for the next one.
    assert alone.batch_size == 1
    assert records[4].batch_size == 1
    for record in records:
        assert record.attempts == 1 and record.status == JobStatus.DELIVERED
        [posted] = consumer.for_job(record.id)
        assert posted.kind == "result" and posted.data
    assert not await redis.exists(*(keys.arq_in_progress(r.id) for r in records))

    # The same seeds one by one (batching off) make the same pictures.
    again = await _submit_all(queue, PROMPTS, "alone")
    async with serving(settings, runner):
        singles = await _delivered_all(queue, again)
    assert [r.batch_size for r in singles] == [1, 1, 1]
    for record, single in zip(together, singles, strict=True):
        [one] = consumer.for_job(record.id)
        [two] = consumer.for_job(single.id)
        _assert_same_image(_pixels(one.data), _pixels(two.data))
    images = [_pixels(consumer.for_job(r.id)[0].data) for r in together]
    assert not np.array_equal(images[0], images[1])


async def test_cancelling_one_job_of_a_running_batch_leaves_the_others(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, settings: Settings, runner: PipelineRunner
) -> None:
    texts = [p.replace("--steps 3", "--steps 8") for p in PROMPTS]
    ids = await _submit_all(queue, texts, "cancel")
    victim = ids[1]
    slow = SlowSteps(runner, STEP_DELAY_S)
    async with ProgressSubscription(redis, PLATFORM) as events, serving(batched(settings), slow):
        async with asyncio.timeout(30):
            async for event in events:
                if event.job_id == victim and event.stage == "denoising":
                    break
        assert event.step < event.total
        outcome, _ = await queue.cancel(victim)
        assert outcome == "stopping"
        cancelled = await wait_for_record(queue.records, victim, lambda r: r.finished)
        kept = await _delivered_all(queue, [ids[0], ids[2]])
    assert cancelled.status == JobStatus.CANCELLED and cancelled.result is None
    assert cancelled.batch_size == 3
    assert [d.kind for d in consumer.for_job(victim)] == ["notice"]
    for record in kept:
        assert record.batch_size == 3 and record.attempts == 1
        [posted] = consumer.for_job(record.id)
        assert posted.kind == "result" and posted.data


# A worker process whose steps are slowed as SlowSteps does, so it can be killed mid-batch.
_SLOW_WORKER = f"""
import sys, time
from reelbot.generation.runner import Runner
real = Runner.generate_batch
def generate_batch(self, items, *, on_progress=None, **kwargs):
    callbacks = list(on_progress or [None] * len(items))
    first = callbacks[0]
    def slow(event):
        if first is not None:
            first(event)
        if event.stage == "denoising":
            time.sleep({STEP_DELAY_S})
    return real(self, items, on_progress=[slow, *callbacks[1:]], **kwargs)
Runner.generate_batch = generate_batch
from reelbot.cli import main
sys.exit(main(["worker", "--queue", "image"]))
"""


SlowWorker = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def slow_worker(settings: Settings, tmp_path: Path) -> Iterator[SlowWorker]:
    """Start a batching worker process on the image queue; killed at the end whatever happened."""
    env = {
        "REELBOT_REDIS_URL": settings.effective_redis_url,
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(settings.data_dir),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_HEARTBEAT_S": "0.5",
        "REELBOT_DEAD_WORKER_S": "3",
        "REELBOT_BATCH_MAX": "3",
    }
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | env
    log = tmp_path / "slow-worker.log"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SLOW_WORKER],
                env=environ,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.returncode not in (0, -signal.SIGKILL):
            print(tail(log))


async def _wait(check: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def _running_batch(
    queue: JobQueue, redis: ArqRedis, slow_worker: SlowWorker, tag: str
) -> tuple[list[str], str, subprocess.Popen[bytes]]:
    """Three compatible jobs, then worker A; returns once their shared call is denoising."""
    texts = [p.replace("--steps 3", "--steps 8") for p in PROMPTS]
    async with ProgressSubscription(redis, PLATFORM) as events:
        # All three wait before worker A starts: it takes them as one batch.
        ids = await _submit_all(queue, texts, tag)
        proc = slow_worker()
        async with asyncio.timeout(60):
            async for event in events:
                if event.job_id in ids and event.stage == "denoising":
                    break
    records = [await queue.get(job_id) for job_id in ids]
    assert [r.status for r in records] == [JobStatus.RUNNING] * 3
    assert [r.batch_size for r in records] == [3, 3, 3]
    assert len({r.worker_id for r in records}) == 1
    assert records[0].worker_id is not None
    return ids, records[0].worker_id, proc


async def _rerun_and_delivered_once(
    queue: JobQueue, redis: ArqRedis, consumer: Posted, ids: Sequence[str], worker_a: str
) -> None:
    for record in await _delivered_all(queue, ids):
        assert record.worker_id != worker_a
        assert record.attempts == 2
        [posted] = consumer.for_job(record.id)
        assert posted.kind == "result" and posted.data

    async def released() -> bool:
        return not await redis.exists(*(keys.arq_in_progress(i) for i in ids))

    await _wait(released, 5, "a re-run job kept its in-progress key")


async def test_sigkill_mid_batch_reruns_every_job_and_delivers_each_once(
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    settings: Settings,
    start_workers: StartWorkers,
    slow_worker: SlowWorker,
) -> None:
    ids, worker_a, proc = await _running_batch(queue, redis, slow_worker, "kill")

    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    # Each job is held by its own lease: when A's lapse, another worker takes them all.
    await start_workers(use_settings=batched(settings))
    await _rerun_and_delivered_once(queue, redis, consumer, ids, worker_a)


async def test_sigterm_mid_batch_requeues_every_job_at_once(
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    settings: Settings,
    start_workers: StartWorkers,
    slow_worker: SlowWorker,
) -> None:
    ids, worker_a, proc = await _running_batch(queue, redis, slow_worker, "term")

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0

    # Back in line at once, every one of them: no lease left, in the queue, record queued.
    for job_id in ids:
        assert not await redis.exists(keys.arq_in_progress(job_id))
        assert await redis.zscore(queue.settings.image_queue, job_id) is not None
        record = await queue.get(job_id)
        assert record.status == JobStatus.QUEUED and "re-queued" in record.note
    await start_workers(use_settings=batched(settings))
    await _rerun_and_delivered_once(queue, redis, consumer, ids, worker_a)
