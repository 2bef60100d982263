"""Process lifecycles: ``reelbot worker`` and ``reelbot up``, stopped cleanly by a signal."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from reelbot import metrics
from reelbot.catalog import load_catalog
from reelbot.config import Settings
from reelbot.errors import ConfigError
from reelbot.runtime.server import RedisServer
from reelbot.runtime.signals import setup_logging, until_signal
from reelbot.runtime.supervise import supervise
from reelbot.store.readings import RedisCollector
from reelbot.worker.worker import serve_generation

if TYPE_CHECKING:
    from reelbot.worker.worker import PipelineRunner

log = logging.getLogger(__name__)

__all__ = ["Adapter", "run_up", "run_worker", "until_signal"]

Adapter = Callable[[Settings, asyncio.Event], Awaitable[None]]
"""A chat adapter as ``reelbot up`` runs it: returns once the event is set."""


def make_runner(settings: Settings) -> PipelineRunner:
    """The generation engine of this process (imports torch)."""
    from reelbot.generation.gpu import GpuOptions
    from reelbot.generation.runner import Runner

    budget = settings.memory_budget_gb
    return Runner(
        load_catalog(settings.models, settings.styles_file),
        data_dir=settings.data_dir,
        device=settings.device,
        memory_budget_bytes=int(budget * 1024**3) if budget else None,
        gpu=GpuOptions.from_settings(settings),
    )


def run_worker(settings: Settings, queues: Sequence[str]) -> None:
    """``reelbot worker``: generation workers on ``queues`` until SIGINT/SIGTERM."""
    setup_logging()
    runner = make_runner(settings)
    url = settings.effective_redis_url

    hung = 0

    async def serve(stop: asyncio.Event) -> None:
        nonlocal hung
        hung = await serve_generation(settings, runner, queues, redis_url=url, stop=stop)

    print(f"reelbot worker: {', '.join(queues)} on {url}", file=sys.stderr, flush=True)
    asyncio.run(until_signal(serve))
    exit_past_hung_calls(hung)


def exit_past_hung_calls(hung: int) -> None:
    """Exit now when a pipeline call the watchdog abandoned is still hung: Python would wait
    for its thread forever. Everything else has been closed by then; the jobs are back in
    the queue or failed as stalled."""
    if hung:
        log.warning("exiting without waiting for %d hung pipeline call(s)", hung)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def load_adapter(target: str) -> Adapter | None:
    """Import ``"module:function"``; None (with a warning) when this build lacks it."""
    module_name, _, attr = target.partition(":")
    try:
        adapter: Adapter = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        log.warning("%s is not part of this build; that adapter will not run", target)
        return None
    return adapter


def run_up(
    settings: Settings, adapters: Sequence[str], *, metrics_queues: Sequence[str] = ()
) -> None:
    """``reelbot up``: a private server if no Redis URL is set, a worker on both queues, and
    the given adapters (``"module:function"``), until SIGINT/SIGTERM; then all of it stops.

    Each part is supervised: one that crashes is logged and restarted with back-off while the
    others keep serving; a configuration error stops them all. One /metrics endpoint serves
    every part (``metrics_queues``: the depths it reports).
    """
    setup_logging()
    server: RedisServer | None = None
    if settings.redis_url is None:
        server = RedisServer(settings.data_dir / "redis")
        server.start()
        settings = settings.model_copy(update={"redis_url": server.url})
    url = settings.effective_redis_url
    hung = 0
    try:
        metrics.serve(
            settings.metrics_port,
            host=settings.metrics_host,
            collectors={"redis": lambda: RedisCollector(url, metrics_queues)}
            if metrics_queues
            else {},
            gpu=True,
        )
        runner = make_runner(settings)
        loaded = [(t, a) for t in adapters if (a := load_adapter(t)) is not None]
        queues = [settings.image_queue, settings.video_queue]

        async def serve(stop: asyncio.Event) -> None:
            nonlocal hung

            async def worker() -> int:
                return await serve_generation(settings, runner, queues, redis_url=url, stop=stop)

            fatal = (ConfigError,)
            parts: list[Awaitable[Any]] = [
                supervise(target, functools.partial(adapter, settings, stop), stop, fatal=fatal)
                for target, adapter in loaded
            ]
            # Every part winds down before a configuration error from one of them is raised.
            worker_hung, *others = await asyncio.gather(
                supervise("worker", worker, stop, fatal=fatal), *parts, return_exceptions=True
            )
            for result in others:
                if isinstance(result, BaseException):
                    raise result
            if isinstance(worker_hung, BaseException):
                raise worker_hung
            hung = worker_hung or 0

        names = ", ".join(["worker", *(t for t, _ in loaded)])
        print(f"reelbot up: Redis at {url}; running {names}", file=sys.stderr, flush=True)
        asyncio.run(until_signal(serve))
    finally:
        # Last: the workers put their jobs back before the server goes away.
        if server is not None:
            server.stop()
    exit_past_hung_calls(hung)
