"""An async stack entered on an event loop of its own, in a daemon thread, so that hypothesis
(which is synchronous) can drive it example by example."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")


class Background(Generic[S]):
    """``with Background(manager) as value``: ``manager`` entered on the thread's loop;
    ``run(coro)`` runs a coroutine there and returns its result."""

    def __init__(self, manager: AbstractAsyncContextManager[S]) -> None:
        self.manager = manager
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> S:
        self.thread.start()
        return self.run(self.manager.__aenter__())

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.manager.__aexit__(None, None, None), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
