"""Faults on the workers, the adapters' delivery consumers and the platforms, each repeated.

Every accepted job must be posted exactly once: none lost, none posted twice. Each repeat adds
its figures (accepted, delivered, duplicated, lost, recovery time) to the session's report.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from integration.conftest import (
    PLATFORM,
    Posted,
    StartWorkers,
    delivered,
    make_settings,
    request,
    tail,
    wait_for_record,
    worker_process,
)
from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, RateLimited
from reelbot.jobs import GenerationParams, JobStatus
from reelbot.queue import delivery as delivery_module
from reelbot.queue.delivery import Delivery, DeliveryConsumer
from reelbot.queue.submit import JobQueue
from reelbot.store.connection import connect
from reelbot.store.leases import live_workers
from reelbot.store.progress import ProgressSubscription
from reelbot.worker.worker import PipelineRunner, serve_generation

from .conftest import REPEATS, Figures

pytestmark = [
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def _collect_leftovers() -> Iterator[None]:
    """Collect the clients of killed or restarted peers here, not in a later test."""
    yield
    gc.collect()


VIDEOS = {
    # Long enough to be killed mid-phase on a fast CPU, short enough for ``make test``.
    "denoise": "waves breaking on rocks --steps 6 --duration 2 --fps 8",
    "encode": "waves breaking on rocks --steps 2 --duration 4 --fps 8",
}
CONSUMER = Path(__file__).with_name("consumer_proc.py")
REPS = range(REPEATS)


def post_counts(posted: Posted, ids: Sequence[str]) -> dict[str, int]:
    return {job_id: len(posted.for_job(job_id)) for job_id in ids}


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's subprocesses, killed at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _announced(redis: ArqRedis, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for the subprocess worker's first heartbeat."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(info["pid"] == proc.pid for info in await live_workers(redis, "reelbot:video")):
            return
        assert proc.poll() is None, tail(log)
        await asyncio.sleep(0.1)
    raise AssertionError("the worker process never announced itself")


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("phase", ["denoise", "encode"])
async def test_worker_sigkill(
    phase: str,
    rep: int,
    queue: JobQueue,
    redis: ArqRedis,
    consumer: Posted,
    start_workers: StartWorkers,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    figures: Figures,
) -> None:
    """SIGKILL the worker mid-denoise or mid-encode: another worker runs it, posted once."""
    log = tmp_path / "worker.log"
    settings = queue.settings
    # A short lease, so that the other worker takes the job over soon after the kill.
    proc = worker_process(
        settings.effective_redis_url,
        settings.data_dir,
        log,
        "--queue",
        "video",
        REELBOT_HEARTBEAT_S="0.25",
        REELBOT_DEAD_WORKER_S="1.5",
    )
    spawn.append(proc)
    await _announced(redis, proc, log)
    async with ProgressSubscription(redis, PLATFORM) as events:
        job = await queue.submit(request(Task.VIDEO, VIDEOS[phase], f"kill-{phase}-{rep}"))
        job_id = job.record.id
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            event = await events.get(1.0)
            if event is None or event.job_id != job_id:
                continue
            if phase == "denoise" and event.stage == "denoising":
                break
            if phase == "encode" and event.status == JobStatus.ENCODING:
                break
        else:
            raise AssertionError(f"job never reached {phase}: {tail(log)}")
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.to_thread(proc.wait, 10)
    at_kill = (await queue.get(job_id)).status
    await start_workers()
    record = await wait_for_record(queue.records, job_id, delivered, within_s=60)
    recovery = time.monotonic() - killed
    await asyncio.sleep(0.3)  # time for a second post to show, were there one
    posts = post_counts(consumer, [job_id])
    figures.add(f"worker SIGKILL mid-{phase}", accepted=1, posts=posts, recovery_s=recovery)
    if phase == "denoise":
        assert at_kill == JobStatus.RUNNING and record.attempts == 2
    else:
        # Killed inside the encode (re-run), or a moment after it stored the result.
        assert at_kill in {JobStatus.ENCODING, JobStatus.DELIVERING, JobStatus.DELIVERED}
    assert posts == {job_id: 1}


def _consumer_process(url: str, log: Path, delay_s: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")}
    with (log.parent / "consumer.out").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CONSUMER), url, PLATFORM, str(log), str(delay_s)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def _line(log: Path, prefix: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if any(x.startswith(prefix) for x in _lines(log)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {prefix!r} line in {log}: {tail(log.parent / 'consumer.out')}")


@pytest.mark.parametrize("rep", REPS)
async def test_adapter_sigkill_with_results_pending(
    rep: int,
    queue: JobQueue,
    start_workers: StartWorkers,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    figures: Figures,
) -> None:
    """SIGKILL the platform's delivery consumer mid-post: a new one posts each result once."""
    await start_workers()
    ids = [
        (await queue.submit(request(Task.IMAGINE, f"pending {i}", f"pend-{rep}-{i}"))).record.id
        for i in range(3)
    ]
    for job_id in ids:
        await wait_for_record(queue.records, job_id, lambda r: r.status == JobStatus.DELIVERING)
    url, log = queue.settings.effective_redis_url, tmp_path / "posts.log"
    first = _consumer_process(url, log, delay_s=30.0)  # its uploads never finish
    spawn.append(first)
    await _line(log, "start ")
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.to_thread(first.wait, 10)
    second = _consumer_process(url, log, delay_s=0.05)
    spawn.append(second)
    for job_id in ids:
        await wait_for_record(queue.records, job_id, delivered, within_s=60)
    recovery = time.monotonic() - killed
    await asyncio.sleep(0.5)
    lines = _lines(log)
    posts = {job_id: lines.count(f"posted reelbot-{job_id}-result") for job_id in ids}
    figures.add("adapter SIGKILL mid-post", accepted=3, posts=posts, recovery_s=recovery)
    assert posts == dict.fromkeys(ids, 1)


BURSTS = {
    # The platform answers 429 with a short retry-after, or 5xx (a transient failure).
    "platform 429 burst": lambda: RateLimited("429 Too Many Requests", retry_after=0.2),
    "platform 5xx burst": lambda: BackendUnavailable("502 Bad Gateway"),
}


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("fault", sorted(BURSTS))
async def test_platform_error_bursts(
    fault: str,
    rep: int,
    settings: Settings,
    queue: JobQueue,
    start_workers: StartWorkers,
    figures: Figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next posts all fail (a burst); every result still goes out once, in order."""
    monkeypatch.setattr(delivery_module, "RETRY_BASE_S", 0.1)  # back-off doubles from here
    error: Callable[[], Exception] = BURSTS[fault]
    jobs = 2
    failures = {"left": 3 * jobs}
    posted = Posted()

    async def post(d: Delivery) -> str:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise error()
        posted.deliveries.append(d)
        return f"m{len(posted.deliveries)}"

    client = connect(settings.effective_redis_url)
    consumer = DeliveryConsumer(client, PLATFORM, post, settings=settings)
    task = asyncio.create_task(consumer.async_run())
    try:
        await start_workers()
        started = time.monotonic()
        ids = [
            (
                await queue.submit(request(Task.IMAGINE, f"burst {i}", f"{fault}-{rep}-{i}"))
            ).record.id
            for i in range(jobs)
        ]
        for job_id in ids:
            await wait_for_record(queue.records, job_id, delivered, within_s=60)
        recovery = time.monotonic() - started
        await asyncio.sleep(0.3)
    finally:
        await consumer.close()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose(close_connection_pool=True)
    posts = post_counts(posted, ids)
    figures.add(fault, accepted=jobs, posts=posts, recovery_s=recovery)
    assert failures["left"] == 0
    assert posts == dict.fromkeys(ids, 1)


class HangingRunner:
    """The real runner, except that a prompt with "hang" blocks its pipeline call for good
    (a stuck driver call: it ignores the cancel event) until ``release`` is set."""

    def __init__(self, real: PipelineRunner, release: threading.Event) -> None:
        self.real = real
        self.release = release

    def preload(self, model: str, task: Task | None = None) -> None:
        self.real.preload(model, task)

    def generate(
        self,
        params: GenerationParams,
        image: Any = None,
        *,
        on_progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Any:
        if "hang" in params.prompt:
            self.release.wait(120)
            raise RuntimeError("released")
        return self.real.generate(params, image, on_progress=on_progress, cancel=cancel)

    def generate_batch(self, items: Any, **kwargs: Any) -> Any:
        return self.real.generate_batch(items, **kwargs)


STALL_S = 3.0
"""Short for a test, yet longer than a tiny pipeline's load-to-first-step on a busy machine: the
job after the hung one ran into 1 s (its first step came later) and failed as stalled too."""


@pytest.mark.parametrize("rep", REPS)
async def test_watchdog_fails_a_hung_pipeline_and_the_worker_goes_on(
    rep: int,
    settings: Settings,
    queue: JobQueue,
    consumer: Posted,
    runner: PipelineRunner,
    figures: Figures,
) -> None:
    """No step for ``stall_s``: the job fails as "stalled", the stuck thread is abandoned and
    the next job runs on a fresh one."""
    release = threading.Event()
    watched = make_settings(settings.effective_redis_url, settings.data_dir, stall_s=STALL_S)
    stop = asyncio.Event()
    queues = [watched.image_queue, watched.video_queue]
    hanging = HangingRunner(runner, release)
    url = watched.effective_redis_url
    serving = asyncio.create_task(
        serve_generation(watched, hanging, queues, redis_url=url, stop=stop)
    )
    try:
        stuck = await queue.submit(request(Task.IMAGINE, "hang forever", f"hang-{rep}"))
        record = await wait_for_record(
            queue.records, stuck.record.id, lambda r: r.finished, within_s=30
        )
        failed_at = time.monotonic()
        assert record.status == JobStatus.FAILED and record.error_code == "stalled"
        detected_s = record.times[JobStatus.FAILED] - record.times[JobStatus.RUNNING]
        assert STALL_S <= detected_s < STALL_S + 5
        after = await queue.submit(request(Task.IMAGINE, "a calm lake", f"after-hang-{rep}"))
        await wait_for_record(queue.records, after.record.id, delivered, within_s=30)
        recovery = time.monotonic() - failed_at
        await wait_for_record(queue.records, stuck.record.id, lambda r: r.posted_at is not None)
        await asyncio.sleep(0.3)
        # Stopped while the abandoned call still hangs: it says so, for the process to exit
        # without waiting for that thread.
        stop.set()
        assert await serving == 1
    finally:
        stop.set()
        release.set()
        await asyncio.gather(serving, return_exceptions=True)
    ids = [stuck.record.id, after.record.id]
    posts = post_counts(consumer, ids)
    figures.add("pipeline hang (watchdog)", accepted=2, posts=posts, recovery_s=recovery)
    assert [d.kind for d in consumer.for_job(stuck.record.id)] == ["notice"]
    assert posts == dict.fromkeys(ids, 1)
