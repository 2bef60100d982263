"""A worker process dies or is stopped mid-job: the job runs again elsewhere, delivered once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.leases import live_workers
from reelbot.store.progress import ProgressEvent, ProgressSubscription

from .conftest import (
    PLATFORM,
    Posted,
    StartWorkers,
    delivered,
    request,
    tail,
    wait_for_record,
    worker_process,
)

pytestmark = pytest.mark.timeout(90)

SLOW_VIDEO = "waves breaking on rocks --steps 8 --duration 4 --fps 8"
REQUEUE_WITHIN_S = 30.0


@pytest.fixture
def spawn(settings: Settings, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker subprocesses of the test, killed at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _worker_id(redis: ArqRedis, proc: subprocess.Popen[bytes], log: Path) -> str:
    """Wait for the subprocess worker's first heartbeat; its id."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for info in await live_workers(redis, "reelbot:video"):
            if info["pid"] == proc.pid:
                return str(info["id"])
        assert proc.poll() is None, tail(log)
        await asyncio.sleep(0.1)
    raise AssertionError("the worker process never announced itself")


async def _first_step(events: ProgressSubscription, job_id: str) -> ProgressEvent:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        event = await events.get(1.0)
        if event is not None and event.job_id == job_id and event.stage == "denoising":
            return event
    raise AssertionError(f"job {job_id} never reported a denoising step")


async def _running_job(
    queue: JobQueue,
    redis: ArqRedis,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    name: str,
    **env: str,
) -> tuple[str, str, subprocess.Popen[bytes]]:
    """Start worker A in a process, give it a slow video and return once it is denoising."""
    log = tmp_path / f"{name}.log"
    url, data_dir = queue.settings.effective_redis_url, queue.settings.data_dir
    proc = worker_process(url, data_dir, log, "--queue", "video", **env)
    spawn.append(proc)
    worker_a = await _worker_id(redis, proc, log)
    async with ProgressSubscription(redis, PLATFORM) as events:
        job = await queue.submit(request(Task.VIDEO, SLOW_VIDEO, name))
        event = await _first_step(events, job.record.id)
    assert event.step < event.total
    record = await queue.get(job.record.id)
    assert record.status == JobStatus.RUNNING and record.worker_id == worker_a
    return job.record.id, worker_a, proc


async def test_sigkill_mid_job_reruns_elsewhere_and_delivers_once(
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    start_workers: StartWorkers,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    # Worker A runs with the default heartbeat (2 s) and lease (10 s): the real guarantee.
    defaults = Settings.model_fields
    lease_s = float(defaults["dead_worker_s"].default)
    job_id, worker_a, proc = await _running_job(
        queue,
        redis,
        spawn,
        tmp_path,
        "kill-9",
        REELBOT_HEARTBEAT_S=str(defaults["heartbeat_s"].default),
        REELBOT_DEAD_WORKER_S=str(lease_s),
    )
    # Killed at once, mid-denoise: starting B first gave A time to finish the job (a second on
    # an idle machine), and the test then saw A's result. B starts well within A's lease.
    proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    await asyncio.to_thread(proc.wait, 10)
    [worker_b] = [w for w in await start_workers() if w.queue_name == queue.settings.video_queue]
    record = await wait_for_record(queue.records, job_id, delivered, within_s=REQUEUE_WITHIN_S + 20)
    took = time.time() - killed_at

    assert record.worker_id == worker_b.worker_id != worker_a
    assert record.attempts == 2
    # Re-run once A's lease lapsed (plus a poll), not after arq's max(job timeouts) + 10 s.
    rerun_after = record.times[JobStatus.RUNNING] - killed_at
    assert rerun_after <= lease_s + 1.5
    run_s = record.times[JobStatus.DELIVERED] - record.times[JobStatus.RUNNING]
    assert took < REQUEUE_WITHIN_S + run_s
    [delivery] = consumer.for_job(job_id)
    assert delivery.kind == "result" and delivery.data
    assert not await redis.exists(keys.arq_in_progress(job_id))


async def test_sigterm_requeues_the_running_job_at_once(
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    start_workers: StartWorkers,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    job_id, worker_a, proc = await _running_job(queue, redis, spawn, tmp_path, "term")

    proc.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(proc.wait, 20)

    assert returncode == 0, tail(tmp_path / "term.log")
    # Back in line at once: no lease left to lapse, still in the queue, record says queued.
    assert not await redis.exists(keys.arq_in_progress(job_id))
    assert await redis.zscore(queue.settings.video_queue, job_id) is not None
    record = await queue.get(job_id)
    assert record.status == JobStatus.QUEUED and "re-queued" in record.note
    assert worker_a not in {w["id"] for w in await live_workers(redis)}

    started = time.time()
    await start_workers()
    record = await wait_for_record(queue.records, job_id, delivered)
    # A fresh worker takes it on its first poll: no lease to wait out.
    assert record.times[JobStatus.RUNNING] - started < 1.5
    assert record.attempts == 2
    assert len(consumer.for_job(job_id)) == 1
