"""Model affinity in the real worker: an interleaved backlog loads models fewer times."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.jobs import GenerationParams, JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store import keys
from reelbot.worker.worker import PipelineRunner

from .conftest import make_settings, request, start_generation, wait_for_record

pytestmark = pytest.mark.timeout(120)

LOAD_S = 0.3


class OneCard:
    """The real runner on a card that holds one model: switching models costs ``LOAD_S``."""

    def __init__(self, real: PipelineRunner) -> None:
        self.real = real
        self.current: str | None = None
        self.loads: list[str] = []
        self.order: list[tuple[int, str]] = []
        """(seed, model) of each job, in the order the pipeline ran them."""
        self.serving = False
        """Loads count (and take ``LOAD_S``) once the workers serve, not at start-up."""

    @property
    def resident(self) -> list[str]:
        """What the card holds."""
        return [self.current] if self.current else []

    def preload(self, model: str, task: Task | None = None) -> None:
        # Upscalers are a few MB, kept beside the pipelines (Runner._sr).
        if task != Task.UPSCALE and model != self.current:
            if self.serving:
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

    def models_run(self) -> list[str]:
        """The models of the jobs in the order they ran."""
        return [model for _, model in self.order]


def switches(models: list[str]) -> int:
    """How many times consecutive jobs changed model."""
    return sum(1 for a, b in itertools.pairwise(models) if a != b)


async def _run_backlog(
    settings: Settings, queue: JobQueue, runner: PipelineRunner, jobs: list[tuple[str, str]]
) -> tuple[OneCard, str | None, list[str]]:
    """Queue ``jobs`` (task, prompt) first, then serve them on one card: the card, the model
    it held when the workers started, and the job ids."""
    ids = []
    for i, (task, prompt) in enumerate(jobs):
        submitted = await queue.submit(request(task, prompt, f"aff-{i}"), with_position=False)
        ids.append(submitted.record.id)
    card = OneCard(runner)
    stop = asyncio.Event()
    task = await start_generation(settings, card, stop)
    start, card.serving = card.current, True
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
    return card, start, ids


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
    card, start, _ = await _run_backlog(own, queue, runner, BACKLOG)
    run = card.models_run()
    assert len(card.loads) == switches([start or "", *run]) - (start is None)
    if wait_s:
        # One model's jobs, then the other's: at most one load past the one on the card.
        assert switches(run) == 1
        assert len(card.loads) <= 2
    else:
        assert [seed for seed, _ in card.order] == [1, 2, 3, 4]
        assert len(card.loads) >= 3


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
    card, _, ids = await _run_backlog(own, queue, runner, jobs)
    # Arrival order across the two queues would switch three times.
    assert switches(card.models_run()) == 1
    assert len(card.loads) <= 2
    # A job that a younger one overtook is marked, so every worker counts its wait from then.
    seeds = [seed for seed, _ in card.order]
    for place, seed in enumerate(seeds):
        overtaken = any(later > seed for later in seeds[:place])
        marked = await redis.hget(keys.affinity(ids[seed - 1]), "s") is not None
        assert marked == overtaken, f"job {seed}"
