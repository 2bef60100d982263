"""At most one edit per message every few seconds, keeping the latest state for later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[None]]


class EditThrottle:
    """Runs an edit at once when the message was not edited lately, else the newest one later.

    Discord rate-limits message edits per channel; a job's progress arrives faster than that,
    and only the latest state is worth showing, so intermediate edits are dropped.
    """

    def __init__(self, interval: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, Action] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    async def run(self, key: str, action: Action) -> None:
        """Edit now if allowed, else keep ``action`` as the one to run when the interval ends.

        After ``aclose`` nothing is scheduled any more: the process is stopping."""
        if self._closed:
            return
        wait = self._last.get(key, -1e9) + self.interval - self._clock()
        if wait <= 0 and key not in self._tasks:
            self._last[key] = self._clock()
            await action()
            return
        self._pending[key] = action
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._flush(key, max(wait, 0.0)))

    async def _flush(self, key: str, wait: float) -> None:
        await asyncio.sleep(wait)
        self._tasks.pop(key, None)
        action = self._pending.pop(key, None)
        if action is None:
            return
        self._last[key] = self._clock()
        try:
            await action()
        except Exception:
            # A lost progress edit is harmless; the next one (or the result) replaces it.
            log.warning("delayed status edit for %s failed", key, exc_info=True)

    def forget(self, key: str) -> None:
        """Drop the state of a finished message, and its delayed edit: shown after the final
        state, that older progress would undo it."""
        self._last.pop(key, None)
        self._pending.pop(key, None)

    async def aclose(self) -> None:
        """Cancel the delayed edits; later ones are dropped."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._pending.clear()
