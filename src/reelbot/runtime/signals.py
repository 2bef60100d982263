"""Running a long-lived process until SIGINT or SIGTERM, with its log lines on stderr.

Torch-free: the platform processes use it too (``runtime.lifecycle`` imports the worker).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

__all__ = ["setup_logging", "until_signal"]


def setup_logging() -> None:
    """Timestamped log lines on stderr for the long-running processes."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


async def until_signal(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)``; SIGINT or SIGTERM sets ``stop`` so that it winds down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
