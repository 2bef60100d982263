"""What the worker modules accept from the generation engine, as protocols (like arq's ``typing``).

A leaf: it imports no other worker module, so ``worker``, ``claiming`` and ``slot`` all name
the engine here instead of importing each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from arq.connections import ArqRedis
from PIL import Image

from reelbot.catalog import Task
from reelbot.jobs import GenerationParams

__all__ = ["GenerationOutput", "LeaseHolder", "PipelineRunner", "Scorer"]


class GenerationOutput(Protocol):
    """What a pipeline call returns (``reelbot.generation.runner.GenerationOutput``)."""

    frames: Sequence[Image.Image]
    fps: int | None
    seed: int
    timings: dict[str, float]


class LeaseHolder(Protocol):
    """A worker as the claim scripts use it: its pool and queue, and the lease it holds jobs by
    (``worker.GenerationWorker``)."""

    @property
    def pool(self) -> ArqRedis: ...
    @property
    def queue_name(self) -> str: ...
    @property
    def worker_id(self) -> str: ...
    @property
    def lease_ms(self) -> int: ...


class Scorer(Protocol):
    """The NSFW classifier (``reelbot.generation.safety.NsfwClassifier``); blocking."""

    def __call__(self, images: Sequence[Image.Image]) -> list[float]: ...


class PipelineRunner(Protocol):
    """The generation engine (``reelbot.generation.runner.Runner``); blocking calls."""

    def preload(self, model: str, task: Task | None = None) -> None: ...

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None = None,
        *,
        on_progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationOutput: ...

    def generate_batch(
        self,
        items: Sequence[tuple[GenerationParams, Image.Image | None]],
        *,
        on_progress: Sequence[Callable[[Any], None] | None] | None = None,
        cancel_events: Sequence[threading.Event | None] | None = None,
    ) -> Sequence[GenerationOutput | BaseException]: ...
