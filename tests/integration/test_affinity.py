"""Model affinity in the real worker: an interleaved backlog loads models fewer times."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.jobs import GenerationParams, JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.store.estimates import record_duration
from reelbot.worker.worker import GenerationWorker, PipelineRunner, serve_generation

from .conftest import make_settings, request, wait_for_record

pytestmark = pytest.mark.timeout(120)

LOAD_S = 0.3


class OneCard:
    """The real runner on a card that holds one model: switching models costs ``LOAD_S``."""

    def __init__(self, real: PipelineRunner, holds: str) -> None:
        self.real = real
        self.holds = holds
        self.current: str | None = None
        self.loads: list[str] = []
        self.order: list[tuple[int, str]] = []
        """(seed, model) of each job, in the order the pipeline ran them."""
        self.serving = False
        """Loads count (and take ``LOAD_S``) once the workers serve, not at start-up."""

    def serve(self) -> None:
        """The workers are about to poll: the card holds ``holds``, whatever start-up loaded."""
        self.current, self.serving = self.holds, True

    @property
    def resident(self) -> list[str]:
        """What the card holds."""
        return [self.current] if self.current else []

    def preload(self, model: str, task: Task | None = None) -> None:
        # Upscalers are a few MB, kept beside the pipelines (Runner._sr).
        if self.serving and task != Task.UPSCALE and model != self.current:
            self.loads.append(model)
            time.sleep(LOAD_S)  # in the pipeline thread, as a real load
            self.current = model
        self.real.preload(model, task)

    def generate(self, params: GenerationParams, *args: Any, **kwargs: Any) -> Any:
        self.order.append((params.seed, params.model))
        return self.real.generate(params, *args, **kwargs)

    def generate_batch(self, items: Any, **kwargs: Any) -> Any:
        self.order.extend((params.seed, params.model) for params, _ in items)
        return self.real.generate_batch(items, **kwargs)


async def _run_backlog(
    settings: Settings,
    queue: JobQueue,
    runner: PipelineRunner,
    jobs: list[tuple[str, str]],
    *,
    holds: str = "tiny-zimage",
    run_s: dict[str, float] | None = None,
) -> tuple[OneCard, list[str]]:
    """Queue ``jobs`` (task, prompt) first, then serve them on a card that holds ``holds``
    and has measured ``run_s``: the card and the job ids."""
    ids = []
    for i, (task, prompt) in enumerate(jobs):
        submitted = await queue.submit(request(task, prompt, f"aff-{i}"), with_position=False)
        ids.append(submitted.record.id)
    card = OneCard(runner, holds=holds)
    stop = asyncio.Event()
    queues = [settings.image_queue, settings.video_queue]
    url = settings.effective_redis_url

    def ready(workers: list[GenerationWorker]) -> None:
        # Before the workers' first poll.
        card.serve()
        workers[0].gpu.run_s.update(run_s or {})

    serving = serve_generation(settings, card, queues, redis_url=url, stop=stop, ready=ready)
    task = asyncio.create_task(serving)
    try:
        for job_id in ids:
            await wait_for_record(
                queue.records,
                job_id,
                lambda r: r.status in (JobStatus.DELIVERING, JobStatus.DELIVERED),
            )
    finally:
        stop.set()
        await task
    return card, ids


# Seeds are the jobs' places in line (1-based).
BACKLOG = [
    ("imagine", "a fox --seed 1 --steps 1"),
    ("imagine", "a fox --seed 2 --steps 1 --model tiny-flux2"),
    ("imagine", "a fox --seed 3 --steps 1"),
    ("imagine", "a fox --seed 4 --steps 1 --model tiny-flux2"),
]


@pytest.mark.parametrize("wait_s", [0.0, 30.0], ids=["arrival-order", "affinity"])
async def test_two_image_models_interleaved_load_once_each_with_affinity(
    wait_s: float, queue: JobQueue, settings: Settings, runner: PipelineRunner
) -> None:
    own = make_settings(
        settings.effective_redis_url, settings.data_dir, affinity_wait_s=wait_s, nsfw_check=False
    )
    card, _ = await _run_backlog(own, queue, runner, BACKLOG)
    if wait_s:
        assert [seed for seed, _ in card.order] == [1, 3, 2, 4]
        assert card.loads == ["tiny-flux2"]
    else:
        assert [seed for seed, _ in card.order] == [1, 2, 3, 4]
        assert card.loads == ["tiny-flux2", "tiny-zimage", "tiny-flux2"]


async def test_a_job_nobody_can_serve_is_not_passed_over_for_a_run_longer_than_its_wait(
    queue: JobQueue, settings: Settings, runner: PipelineRunner
) -> None:
    """The card holds tiny-flux2 and has measured a call of it at 5 s; nobody else serves the
    queue. An older tiny-zimage job would wait that run out, past its 1 s wait: it goes first,
    loaded now, as in arrival order. (Without run times the flux2 job went first.)"""
    own = make_settings(
        settings.effective_redis_url, settings.data_dir, affinity_wait_s=1.0, nsfw_check=False
    )
    jobs = [BACKLOG[0], ("imagine", "a fox --seed 2 --steps 1 --model tiny-flux2")]
    card, _ = await _run_backlog(
        own, queue, runner, jobs, holds="tiny-flux2", run_s={"tiny-flux2": 5.0}
    )
    assert [seed for seed, _ in card.order] == [1, 2]
    assert card.loads == ["tiny-zimage", "tiny-flux2"]


async def test_image_and_video_queues_of_one_gpu_choose_together(
    queue: JobQueue, settings: Settings, runner: PipelineRunner, redis: ArqRedis
) -> None:
    jobs = [
        ("video", "a wave --seed 1 --steps 1 --duration 1"),
        ("imagine", "a fox --seed 2 --steps 1"),
        ("video", "a wave --seed 3 --steps 1 --duration 1"),
        ("imagine", "a fox --seed 4 --steps 1"),
    ]
    own = make_settings(settings.effective_redis_url, settings.data_dir, nsfw_check=False)
    card, ids = await _run_backlog(own, queue, runner, jobs)
    # Arrival order across the two queues would load four times.
    assert [seed for seed, _ in card.order] == [2, 4, 1, 3]
    assert card.loads == ["tiny-wan"]
    # A job that a younger one overtook is marked, so every worker counts its wait from then.
    seeds = [seed for seed, _ in card.order]
    for place, seed in enumerate(seeds):
        overtaken = any(later > seed for later in seeds[:place])
        marked = await redis.hget(keys.affinity(ids[seed - 1]), "s") is not None
        assert marked == overtaken, f"job {seed}"


async def test_a_job_that_needs_a_load_is_left_for_the_gpu_that_has_its_model(
    queue: JobQueue, settings: Settings, runner: PipelineRunner, redis: ArqRedis
) -> None:
    """Two GPUs (two serve_generation in one process, each its own slot) on the image queue:
    one holds tiny-zimage, the other tiny-flux2. Each job goes to the card that holds its
    model, from the other's heartbeat, and nobody loads anything."""
    own = make_settings(settings.effective_redis_url, settings.data_dir, nsfw_check=False)
    for model in ("tiny-zimage", "tiny-flux2"):
        await record_duration(redis, model, 0.5, 1.0)  # so a running call's end is known
    cards = [OneCard(runner, holds="tiny-zimage"), OneCard(runner, holds="tiny-flux2")]
    workers: list[list[GenerationWorker]] = [[], []]
    stop = asyncio.Event()

    def ready(i: int) -> Any:
        def started(ws: list[GenerationWorker]) -> None:
            cards[i].serve()
            workers[i].extend(ws)

        return started

    url = own.effective_redis_url
    tasks = [
        asyncio.create_task(
            serve_generation(own, card, [own.image_queue], redis_url=url, stop=stop, ready=ready(i))
        )
        for i, card in enumerate(cards)
    ]

    def sees_the_other_free(ws: list[GenerationWorker]) -> bool:
        return bool(ws and ws[0].peers.known and ws[0].peers.known[0].free_at_ms is not None)

    async def each_sees_the_other_free() -> None:
        async with asyncio.timeout(10):
            while not all(map(sees_the_other_free, workers)):  # noqa: ASYNC110 (set by beats)
                await asyncio.sleep(0.05)

    try:
        for i, model in enumerate(["tiny-flux2", "tiny-zimage", "tiny-flux2"]):
            await each_sees_the_other_free()
            text = f"a fox --seed {i + 1} --steps 1 --model {model}"
            submitted = await queue.submit(
                request("imagine", text, f"peer-{i}"), with_position=False
            )
            await wait_for_record(
                queue.records,
                submitted.record.id,
                lambda r: r.status in (JobStatus.DELIVERING, JobStatus.DELIVERED),
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert [c.loads for c in cards] == [[], []]
    assert [seed for seed, _ in cards[0].order] == [2]
    assert [seed for seed, _ in cards[1].order] == [1, 3]
    # Each heartbeat carries how long a call of each model it ran took, for the peers' chooser.
    beats = [ws[0].info()["run_s"] for ws in workers]
    assert [set(b) for b in beats] == [{"tiny-zimage"}, {"tiny-flux2"}]
    assert all(0 < s < 60 for b in beats for s in b.values()), beats
