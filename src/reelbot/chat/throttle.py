"""At most one edit per message (or per room of messages) every few seconds, keeping the latest
state for later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[bool | None]]
"""An edit; it returns False when it sent nothing (the state was shown already), which leaves
the room's slot free for the next one."""

FINALS_KEPT = 4096
"""Keys remembered as ended, so that a late edit cannot overwrite their final state."""


class EditThrottle:
    """Runs an edit at once when the room was not edited lately, else the newest one later.

    Discord rate-limits message edits per channel; a job's progress arrives faster than that,
    and only the latest state is worth showing, so intermediate edits are dropped.

    A room is where the platform counts its edit rate: by default each key (a message) is its
    own room; Telegram counts per chat, so its status messages pass their chat as ``room`` and
    share its slots, one waiting edit per message, oldest first. ``interval_for`` picks a
    room's interval (else ``interval`` for every room). An edit run with ``final`` is a key's
    last: later ones are dropped, and ``aclose`` still runs it if it was waiting.
    """

    def __init__(
        self,
        interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        interval_for: Callable[[str], float] | None = None,
    ) -> None:
        self.interval = interval
        self._interval_for = interval_for
        self._clock = clock
        self._last: dict[str, float] = {}
        """By room: when its latest edit went out."""
        self._pending: dict[str, tuple[str, Action, bool]] = {}
        """By key: its room, the newest edit waiting for a slot, and whether it is final."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """By room: the task that sends its waiting edits."""
        self._final: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    def interval_of(self, room: str) -> float:
        """Seconds between edits in ``room``."""
        return self.interval if self._interval_for is None else self._interval_for(room)

    def touch(self, room: str) -> None:
        """Count a message just posted in ``room`` as its latest edit (it used a slot too)."""
        self._last[room] = self._clock()

    def _wait(self, room: str) -> float:
        return self._last.get(room, -1e9) + self.interval_of(room) - self._clock()

    def wait_s(self, room: str) -> float:
        """Seconds until ``room`` may be edited again (0: now), for an edit made outside."""
        return max(0.0, self._wait(room))

    async def run(
        self, key: str, action: Action, *, room: str | None = None, final: bool = False
    ) -> None:
        """Edit now if allowed, else keep ``action`` as the one to run when the interval ends.

        After a ``final`` edit of ``key``, and after ``aclose``, nothing more is run."""
        if self._closed or key in self._final:
            return
        room = key if room is None else room
        if final:
            self.end(key)
        wait = self._wait(room)
        if wait <= 0 and room not in self._tasks:
            await self._now(room, action)
            return
        self._pending[key] = (room, action, final)
        if room not in self._tasks:
            self._tasks[room] = asyncio.create_task(self._flush(room, max(wait, 0.0)))

    async def _now(self, room: str, action: Action) -> None:
        before = self._last.get(room)
        self._last[room] = self._clock()
        if await action() is False:  # nothing was sent: the slot is still free
            if before is None:
                self._last.pop(room, None)
            else:
                self._last[room] = before
            return
        # Counted from the answer, not the request: a request slowed on its way (a busy host)
        # cannot bring the next one closer than the interval on the platform's side.
        self._last[room] = self._clock()

    async def _flush(self, room: str, wait: float) -> None:
        """Run the room's waiting edits, one per interval, oldest first, until none is left."""
        await asyncio.sleep(wait)  # the time left when it was scheduled
        while keys := [k for k, (r, _, _) in self._pending.items() if r == room]:
            wait = self._wait(room)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            _, action, _ = self._pending.pop(keys[0])
            try:
                await self._now(room, action)
            except Exception:
                # A lost progress edit is harmless; the next one (or the result) replaces it.
                log.warning("delayed status edit for %s failed", keys[0], exc_info=True)
        self._tasks.pop(room, None)

    def end(self, key: str) -> None:
        """Count ``key`` as ended (its final state is shown elsewhere): later edits are dropped."""
        self._final[key] = None
        while len(self._final) > FINALS_KEPT:
            self._final.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop the state of a finished message, and its delayed edit: shown after the final
        state, that older progress would undo it. (A key that ended ``final`` stays ended.)"""
        self._last.pop(key, None)
        self._pending.pop(key, None)

    async def aclose(self) -> None:
        """Cancel the delayed edits; final ones still waiting run now, later ones are dropped."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        pending, self._pending = self._pending, {}
        for key, (_, action, final) in pending.items():
            if final:
                try:
                    await action()
                except Exception:
                    log.warning("final status edit for %s failed", key, exc_info=True)
