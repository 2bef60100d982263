"""Fan-out of job events to the browsers of one client id, over server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Hub"]

QUEUE_SIZE = 256
"""Events a slow browser may fall behind by; older progress is dropped, it is redrawn anyway."""


class Hub:
    """Browsers listening per client id."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.closed = False

    def clients(self) -> list[str]:
        """The client ids with a page open now."""
        return list(self._listeners)

    def push(self, client: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every open page of ``client``; a full queue drops its oldest."""
        for queue in self._listeners.get(client, ()):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(payload)

    @contextlib.asynccontextmanager
    async def listen(self, client: str) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue of this client's events; None in it means the server is stopping."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        if self.closed:
            queue.put_nowait(None)
        self._listeners.setdefault(client, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(client)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[client]

    def close(self) -> None:
        """End every open stream, so the HTTP server can stop without waiting on them."""
        self.closed = True
        for listeners in self._listeners.values():
            for queue in listeners:
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(None)
