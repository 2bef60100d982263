"""``reelbot health``: is Redis answering, and is a worker alive on the queues?"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from reelbot.store.leases import live_workers

__all__ = ["check"]


async def check(
    url: str, queues: Sequence[str], *, this_host: bool = False, timeout_s: float = 3.0
) -> str | None:
    """None when healthy, else one line saying what is wrong.

    With ``queues``, each must have a worker whose heartbeat has not lapsed (on this host
    only, with ``this_host``: a pod's liveness probe must not pass on another pod's worker).
    """
    # No retries: a probe wants a quick answer, and the kubelet probes again anyway.
    redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
            if not queues:
                return None
            workers = await live_workers(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"Redis does not answer at {_safe(url)}: {exc or type(exc).__name__}"
    finally:
        await redis.aclose(close_connection_pool=True)
    host = socket.gethostname()
    for queue in queues:
        if not any(
            w.get("queue") == queue and (not this_host or w.get("host") == host) for w in workers
        ):
            where = " on this host" if this_host else ""
            return f"no live worker{where} on {queue}"
    return None


def _safe(url: str) -> str:
    """The URL without its password, fit for a probe's output."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
