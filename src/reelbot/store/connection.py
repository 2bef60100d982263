"""Redis connections with timeouts and retries that ride out a short server restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from reelbot.store import serializer

SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# About 15 s of retries in all: long enough for a restarted server to load its AOF, short
# enough that a real outage surfaces as an error instead of a hang.
RETRIES = 20
BACKOFF_CAP_S = 1.0
CLOSE_TIMEOUT_S = 8.0
"""How long closing waits on a Redis that is gone before it lets the process stop."""


def connect(
    url: str, *, queue: str = "arq:queue", max_connections: int = 32, retries: int = RETRIES
) -> ArqRedis:
    """An arq Redis client for ``url`` with JSON serialization, timeouts and bounded retries."""
    pool = ConnectionPool.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=0.02), retries),
        # OSError: redis-py retries a refused connect only when told to, and a restarting
        # server refuses connections until it listens again.
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError, OSError],
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=serializer.dumps,
        job_deserializer=serializer.loads,
        default_queue_name=queue,
    )


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[ArqRedis]:
    """``connect(url)`` for the length of a block; closed on the way out, within
    ``CLOSE_TIMEOUT_S`` even when the server has gone away."""
    redis = connect(url)
    try:
        yield redis
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await redis.aclose(close_connection_pool=True)
