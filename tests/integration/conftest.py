"""Fixtures for integration tests: a real private Valkey (or redis-server), the tiny models.

The server is started per test module (``server``) and flushed before each test; tests that
kill or restart it take their own (``own_server``). Tiny models are built once under
``REELBOT_TEST_DATA_DIR`` (default ``.data/test`` in the repository) and reused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from arq.connections import ArqRedis

from reelbot.catalog import Catalog, Task, load_catalog
from reelbot.config import Settings
from reelbot.jobs import GenerationRequest, JobStatus, Options, ReplyAddress, Requester
from reelbot.queue.delivery import Delivery, DeliveryConsumer
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.store.records import JobRecord, RecordStore
from reelbot.worker.worker import GenerationWorker, PipelineRunner, serve_generation

REPO = Path(__file__).resolve().parents[2]
PLATFORM = "web"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """One data dir for the whole run, so the tiny models are built once."""
    path = Path(os.environ.get("REELBOT_TEST_DATA_DIR") or REPO / ".data" / "test")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The tiny model set."""
    return load_catalog("tiny")


@pytest.fixture(scope="session")
def runner(catalog: Catalog, data_dir: Path) -> PipelineRunner:
    """The real generation engine on the CPU, shared by the in-process workers."""
    from reelbot.generation.runner import Runner

    real = Runner(catalog, data_dir=data_dir, device="cpu")
    for name in ("tiny-zimage", "tiny-wan"):
        real.preload(name)
    return real


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private server for the module's tests."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server for one test that stops or restarts it."""
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(kill=True)


def make_settings(url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test: tiny models, fast heartbeats."""
    values: dict[str, Any] = {
        "redis_url": url,
        "models": "tiny",
        "data_dir": data_dir,
        "device": "cpu",
        "heartbeat_s": 0.5,
        "dead_worker_s": 3.0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(server: RedisServer, data_dir: Path) -> Settings:
    """Settings on the module's server, flushed for this test."""
    client = sync_redis.Redis.from_url(server.url, socket_timeout=5)
    client.flushall()
    client.close()
    return make_settings(server.url, data_dir)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    """A client for the test's own reads and writes."""
    client = connect(settings.effective_redis_url)
    yield client
    await client.aclose(close_connection_pool=True)


@pytest.fixture
def queue(redis: ArqRedis, settings: Settings, catalog: Catalog) -> JobQueue:
    """The adapters' side: submit, look up, cancel."""
    return JobQueue(redis, settings, catalog)


def request(
    task: Task | str,
    text: str,
    source_id: str,
    *,
    image_ref: str | None = None,
    user: str = "u1",
    options: Options | None = None,
    **refs: Any,
) -> GenerationRequest:
    """A request as an adapter builds it (``refs``: video_ref, mask_ref, more_refs)."""
    return GenerationRequest(
        task=Task(task),
        text=text,
        options=options or Options(),
        image_ref=image_ref,
        **refs,
        requester=Requester(platform=PLATFORM, user_id=user, display_name=user),
        reply=ReplyAddress(platform=PLATFORM, channel_id="c1"),
        source_id=source_id,
    )


@dataclass
class Posted:
    """What the in-process delivery consumer posted."""

    deliveries: list[Delivery] = field(default_factory=list)

    def for_job(self, job_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.job_id == job_id]


@dataclass
class Service:
    """Workers and a delivery consumer running in this process."""

    posted: Posted
    workers: list[GenerationWorker] = field(default_factory=list)


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[Posted]:
    """The test platform's delivery consumer, posting into a list."""
    posted = Posted()

    async def post(delivery: Delivery) -> str:
        posted.deliveries.append(delivery)
        return f"m{len(posted.deliveries)}"

    client = connect(settings.effective_redis_url)
    worker = DeliveryConsumer(client, PLATFORM, post, settings=settings)
    task = asyncio.create_task(worker.async_run())
    yield posted
    await worker.close()
    await asyncio.gather(task, return_exceptions=True)
    await client.aclose(close_connection_pool=True)


StartWorkers = Callable[..., Awaitable[list[GenerationWorker]]]


@pytest.fixture
async def start_workers(settings: Settings, runner: PipelineRunner) -> AsyncIterator[StartWorkers]:
    """Start in-process generation workers (both queues, one GPU slot) on demand."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        use_runner: PipelineRunner | None = None, use_settings: Settings | None = None
    ) -> list[GenerationWorker]:
        stop = asyncio.Event()
        ready: asyncio.Future[list[GenerationWorker]] = asyncio.get_running_loop().create_future()
        s = use_settings or settings
        task = asyncio.create_task(
            serve_generation(
                s,
                use_runner or runner,
                [s.image_queue, s.video_queue],
                redis_url=s.effective_redis_url,
                stop=stop,
                ready=ready.set_result,
            )
        )
        running.append((stop, task))
        return await ready

    yield start
    for stop, _ in running:
        stop.set()
    await asyncio.gather(*(task for _, task in running))


async def wait_for_record(
    store: RecordStore,
    job_id: str,
    check: Callable[[JobRecord], bool],
    *,
    within_s: float = 30.0,
) -> JobRecord:
    """Poll a job record until ``check`` holds; fail with its last state after ``within_s``."""
    deadline = time.monotonic() + within_s
    record = None
    while time.monotonic() < deadline:
        record = await store.get(job_id)
        if record is not None and check(record):
            return record
        await asyncio.sleep(0.02)
    state = None if record is None else (record.status, record.error_code, record.note)
    raise AssertionError(f"job {job_id} did not get there in {within_s}s; last {state}")


def posted_once(record: JobRecord) -> bool:
    """Finished and posted."""
    return record.posted_at is not None


def delivered(record: JobRecord) -> bool:
    """Delivered and posted."""
    return record.status == JobStatus.DELIVERED and record.posted_at is not None


def worker_process(
    url: str, data_dir: Path, log: Path, *extra: str, **env: str
) -> subprocess.Popen[bytes]:
    """``python -m reelbot.cli worker`` as a subprocess on the tiny models, logging to ``log``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_REDIS_URL": url,
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(data_dir),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_HEARTBEAT_S": "0.5",
        "REELBOT_DEAD_WORKER_S": "3",
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reelbot.cli", "worker", *extra],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a subprocess's log, for failure messages."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


class SlowSteps:
    """The real runner, with each denoising step of a call taking ``delay_s`` longer."""

    def __init__(self, real: Any, delay_s: float = 0.2) -> None:
        self.real = real
        self.delay_s = delay_s

    def preload(self, *args: Any, **kwargs: Any) -> None:
        self.real.preload(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.real.generate(*args, **kwargs)

    def generate_batch(self, items: Any, *, on_progress: Any = None, **kwargs: Any) -> Any:
        callbacks = list(on_progress or [None] * len(items))
        first = callbacks[0]

        def slow(event: Any) -> None:
            if first is not None:
                first(event)
            if event.stage == "denoising":
                time.sleep(self.delay_s)  # in the pipeline thread: a slower GPU

        return self.real.generate_batch(items, on_progress=[slow, *callbacks[1:]], **kwargs)


async def start_generation(
    settings: Settings, runner: Any, stop: asyncio.Event, *, within_s: float = 30.0
) -> asyncio.Task[int]:
    """Both generation workers in this process, returned once each has announced itself (a
    worker closed before its loop started would never stop)."""
    from reelbot.store.leases import live_workers

    queues = [settings.image_queue, settings.video_queue]
    url = settings.effective_redis_url
    task = asyncio.create_task(serve_generation(settings, runner, queues, redis_url=url, stop=stop))
    redis = connect(url)
    try:
        async with asyncio.timeout(within_s):
            while len(await live_workers(redis)) < len(queues):  # noqa: ASYNC110 (Redis, polled)
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose(close_connection_pool=True)
    return task
