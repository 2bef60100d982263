"""Supervision: a part that crashes is restarted with back-off; a call that may fail is retried.

- ``supervise``   runs one part of ``reelbot up`` (the worker, an adapter, the web chat) until
  its stop event is set; a crash is logged and the part restarted after a growing delay.
- ``BestEffort``  start-up calls a bot can run without (a command menu, a description): tried
  once in line, then again in the background with back-off, never raising.

Imports nothing of reelbot: the adapters use it and must not load the generation engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

__all__ = ["Backoff", "BestEffort", "supervise"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: ``first_s``, then times ``factor`` each time, up to ``max_s``."""

    first_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """The delay before each next try, without end."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``; True when ``stop`` was set first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


async def supervise(
    name: str,
    run: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    backoff: Backoff = Backoff(),
    fatal: tuple[type[BaseException], ...] = (),
    steady_s: float = 60.0,
) -> T | None:
    """Run ``run()`` until it returns; restart it with back-off each time it raises.

    Returns what ``run()`` returned (a part that stands down on its own is not restarted), or
    None when ``stop`` is set while waiting to restart. An exception in ``fatal`` (a
    configuration error, which a restart cannot fix) sets ``stop`` for every part sharing it
    and is raised. A run that lasted ``steady_s`` starts the back-off over.
    """
    delays = backoff.delays()
    while True:
        started = time.monotonic()
        try:
            return await run()
        except fatal:
            log.error("%s: stopping everything after a configuration error", name)
            stop.set()
            raise
        except Exception:
            if stop.is_set():
                log.exception("%s failed while stopping", name)
                return None
            if time.monotonic() - started >= steady_s:
                delays = backoff.delays()
            delay = next(delays)
            log.exception("%s crashed; restarting in %.1fs", name, delay)
        if await _sleep_unless(stop, delay):
            return None
        log.info("%s: restarting", name)


class BestEffort:
    """Start-up calls that are worth making but not worth stopping for.

    ``await best_effort.call("setMyCommands", fn)`` tries ``fn()`` now; when it fails with an
    error ``retry_if`` accepts, it goes on trying in the background (``attempts`` in all, with
    ``backoff`` between them); any other error is logged once. ``aclose()`` ends the retries.
    """

    def __init__(
        self,
        *,
        retry_if: Callable[[Exception], bool] = lambda exc: True,
        backoff: Backoff = Backoff(),
        attempts: int = 10,
    ) -> None:
        self.retry_if = retry_if
        self.backoff = backoff
        self.attempts = attempts
        self._tasks: set[asyncio.Task[bool]] = set()

    async def call(self, what: str, fn: Callable[[], Awaitable[object]]) -> bool:
        """Try ``fn()`` once now; True when it worked, else False (with retries scheduled when
        the error is worth another try)."""
        outcome = await self._try(what, fn, 1)
        if outcome is False:
            task = asyncio.create_task(self._keep_trying(what, fn), name=f"retry {what}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return outcome is True

    async def _try(
        self, what: str, fn: Callable[[], Awaitable[object]], attempt: int
    ) -> bool | None:
        """True: it worked; False: try again later; None: give up."""
        try:
            await fn()
        except Exception as exc:
            if not self.retry_if(exc):
                log.error("%s failed and will not be retried: %s", what, exc)
                return None
            if attempt >= self.attempts:
                log.error("%s failed %d times; giving up: %s", what, attempt, exc)
                return None
            log.warning("%s failed (try %d of %d): %s", what, attempt, self.attempts, exc)
            return False
        if attempt > 1:
            log.info("%s worked on try %d", what, attempt)
        return True

    async def _keep_trying(self, what: str, fn: Callable[[], Awaitable[object]]) -> bool:
        delays = self.backoff.delays()
        for attempt in range(2, self.attempts + 1):
            await asyncio.sleep(next(delays))
            outcome = await self._try(what, fn, attempt)
            if outcome is not False:
                return outcome is True
        return False

    async def aclose(self) -> None:
        """Stop the retries still waiting."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
