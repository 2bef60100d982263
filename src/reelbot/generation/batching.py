"""Which waiting jobs can share one pipeline call: pure functions, no torch, for the worker.

A batch is one pipeline call with a list of prompts and one seeded generator per prompt, so
each item comes out as a one-by-one run with the same seed would (``Runner.generate_batch``).
That holds only when everything but the prompt, the negative prompt and the seed is the same.

Batching is off by default (``REELBOT_BATCH_MAX=1``): on an H200, batch 8 at 1024² was only
1–6 % faster per image than batch 1, because one 1024² image already fills the GPU (bench/
RESULTS.md, 2026-11-26: the same MFU at batch 1 and 8). It pays at smaller sizes or on smaller
cards, where one image leaves the GPU idle between kernels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from reelbot.catalog import Task
from reelbot.jobs import GenerationParams

__all__ = ["BATCHABLE_TASKS", "batch_key", "plan_batches"]

# Text-to-image only. Remix is left out: FLUX.2 klein reads a list of images as several
# references for one prompt, not one image per prompt; video jobs fill a card on their own.
BATCHABLE_TASKS = frozenset({Task.IMAGINE})


def batch_key(params: GenerationParams) -> tuple[Hashable, ...] | None:
    """What must match for two jobs to share a pipeline call; None: the job runs alone."""
    if params.task not in BATCHABLE_TASKS or params.count > 1:
        # A grid already fills its call with its own images: it runs alone.
        return None
    return (
        params.model,
        params.task.value,
        params.width,
        params.height,
        params.steps,
        params.guidance,
        params.strength,
        params.frames,
        # A pipeline may treat "no negative prompt" differently from an empty one, so a job
        # with one never shares a call with a job without.
        bool(params.negative_prompt),
    )


def plan_batches(params_list: Sequence[GenerationParams], max_size: int) -> list[list[int]]:
    """Group job indices into batches of compatible jobs, at most ``max_size`` each.

    Batches come in the order of their first job and keep queue order inside, so no job waits
    behind a later one; a job that cannot batch is a batch of one.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    batches: list[list[int]] = []
    open_by_key: dict[tuple[Hashable, ...], list[int]] = {}
    for index, params in enumerate(params_list):
        key = batch_key(params)
        if key is None or max_size == 1:
            batches.append([index])
            continue
        current = open_by_key.get(key)
        if current is None or len(current) >= max_size:
            current = []
            open_by_key[key] = current
            batches.append(current)
        current.append(index)
    return batches
