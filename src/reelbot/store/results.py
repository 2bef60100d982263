"""Where encoded results wait for delivery: an interface, and Redis bytes with a TTL.

An S3-compatible store can be added behind the same interface (put returns a reference the
delivery consumer can resolve); results survive a bot restart because they wait here.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from redis.asyncio import Redis

from reelbot.store import keys

__all__ = ["INPUT_TTL_S", "RedisResultStore", "ResultStore", "load_input", "store_input"]

INPUT_TTL_S = 24 * 3600
"""Input images wait at most as long as a job may wait in the queue (arq's default expiry)."""


class ResultStore(ABC):
    """Stores a job's encoded result until the platform has posted it."""

    @abstractmethod
    async def put(self, job_id: str, data: bytes, *, mime: str, part: int | None = None) -> str:
        """Store ``data`` and return a reference to it.

        ``part`` is the index of one image of a grid (stored beside the grid itself, which is
        the part-less result); each part has its own reference, fetched with ``get`` alike.
        """

    @abstractmethod
    async def get(self, ref: str) -> bytes | None:
        """The bytes behind ``ref``, or None when they expired or were deleted."""

    @abstractmethod
    async def delete(self, ref: str) -> None:
        """Drop a result (after delivery, or by an operator)."""


class RedisResultStore(ResultStore):
    """Results as Redis strings with a TTL (Settings.result_ttl_s)."""

    scheme = "redis:"

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def put(self, job_id: str, data: bytes, *, mime: str, part: int | None = None) -> str:
        """Store the bytes under the job's result key (a grid's part: ``<job>.<part>``)."""
        name = job_id if part is None else f"{job_id}.{part}"
        await self.redis.set(keys.result(name), data, ex=self.ttl_s)
        return f"{self.scheme}{name}"

    def _key(self, ref: str) -> str:
        if not ref.startswith(self.scheme):
            raise ValueError(f"not a Redis result reference: {ref!r}")
        return keys.result(ref.removeprefix(self.scheme))

    async def get(self, ref: str) -> bytes | None:
        """The bytes, or None after the TTL."""
        data: bytes | None = await self.redis.get(self._key(ref))
        return data

    async def delete(self, ref: str) -> None:
        """Delete the bytes."""
        await self.redis.delete(self._key(ref))


async def store_input(redis: Redis, data: bytes, *, ttl_s: int = INPUT_TTL_S) -> str:
    """Store an input image for a job and return its reference (the same bytes, the same ref)."""
    ref = hashlib.sha256(data).hexdigest()[:32]
    await redis.set(keys.input_image(ref), data, ex=ttl_s)
    return ref


async def load_input(redis: Redis, ref: str) -> bytes | None:
    """The input image bytes behind ``ref``, or None when they expired."""
    data: bytes | None = await redis.get(keys.input_image(ref))
    return data
