"""Progress and status events from worker to adapter, through Redis pub/sub.

Progress may be lossy (a missed step is redrawn by the next one), so it rides pub/sub, one
channel per platform; the latest event of each job is also kept under a short-lived key for
listings. The worker throttles at the source: the adapters' edit rates (Discord, Telegram's
about one message a second per chat) are far below a pipeline's step rate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from reelbot.jobs import JobStatus
from reelbot.store import keys

log = logging.getLogger(__name__)

__all__ = [
    "ProgressEvent",
    "ProgressPublisher",
    "ProgressSubscription",
    "StepProgress",
    "latest",
    "publish",
]

MIN_INTERVAL_S = 0.5
PREVIEW_INTERVAL_S = 2.0
PREVIEW_SIDE = 256
LATEST_TTL_S = 600
CLOSE_WAIT_S = 5.0
SUBSCRIBE_POLL_S = 1.0


class StepProgress(Protocol):
    """What a pipeline reports after each step (``reelbot.generation.runner.Progress``)."""

    @property
    def step(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def stage(self) -> str: ...
    @property
    def preview(self) -> Image.Image | None: ...


class ProgressEvent(BaseModel):
    """One job's status and, while it runs, its step count and an optional preview."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: JobStatus
    stage: str | None = None
    step: int = 0
    total: int = 0
    preview_jpeg_b64: str | None = None
    message: str | None = None
    at: float


async def publish(redis: Redis, platform: str, event: ProgressEvent) -> None:
    """Publish an event to the platform's adapter and keep it as the job's latest."""
    data = event.model_dump_json()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.publish(keys.progress_channel(platform), data)
        pipe.set(keys.progress(event.job_id), data, ex=LATEST_TTL_S)
        await pipe.execute()


async def latest(redis: Redis, job_id: str) -> ProgressEvent | None:
    """The job's most recent event, if one was sent in the last few minutes."""
    raw = await redis.get(keys.progress(job_id))
    return None if raw is None else ProgressEvent.model_validate_json(raw)


class ProgressSubscription:
    """One platform's events as they come: ``async with ProgressSubscription(r, platform) as s``."""

    def __init__(self, redis: Redis, platform: str) -> None:
        self.platform = platform
        self._pubsub = redis.pubsub()

    async def __aenter__(self) -> ProgressSubscription:
        await self._pubsub.subscribe(keys.progress_channel(self.platform))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def get(self, wait_s: float) -> ProgressEvent | None:
        """The next event, or None when none came within ``wait_s`` seconds."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, 1.0)
            )
            if message is not None:
                return ProgressEvent.model_validate_json(message["data"])
        return None

    def __aiter__(self) -> AsyncIterator[ProgressEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ProgressEvent]:
        while True:
            event = await self.get(SUBSCRIBE_POLL_S)
            if event is not None:
                yield event


def _preview_b64(image: Image.Image) -> str:
    small = image.convert("RGB")
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = BytesIO()
    small.save(buf, "JPEG", quality=70)
    return base64.b64encode(buf.getvalue()).decode()


class ProgressPublisher:
    """One job's events: throttled step progress from the pipeline thread, and status changes."""

    def __init__(
        self,
        redis: Redis,
        *,
        job_id: str,
        platform: str,
        min_interval_s: float = MIN_INTERVAL_S,
        preview_interval_s: float = PREVIEW_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.job_id = job_id
        self.platform = platform
        self.min_interval_s = min_interval_s
        self.preview_interval_s = preview_interval_s
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._last_at = 0.0
        self._last_preview_at = 0.0
        self._last_stage: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_progress(self, progress: StepProgress) -> None:
        """Runner callback, called in the pipeline thread: drop what the throttle says to."""
        now = time.monotonic()
        with self._lock:
            changed = progress.stage != self._last_stage
            last = progress.step >= progress.total
            if not (changed or last or now - self._last_at >= self.min_interval_s):
                return
            self._last_at = now
            self._last_stage = progress.stage
            preview = None
            if (
                progress.preview is not None
                and now - self._last_preview_at >= self.preview_interval_s
            ):
                self._last_preview_at = now
                preview = progress.preview
        # Encoding the small preview here keeps that work off the event loop.
        event = ProgressEvent(
            job_id=self.job_id,
            status=JobStatus.RUNNING,
            stage=progress.stage,
            step=progress.step,
            total=progress.total,
            preview_jpeg_b64=_preview_b64(preview) if preview is not None else None,
            at=time.time(),
        )
        self._loop.call_soon_threadsafe(self._send, event)

    def status(self, status: JobStatus, message: str | None = None) -> None:
        """Send a status change now (from the event loop)."""
        self._send(
            ProgressEvent(job_id=self.job_id, status=status, message=message, at=time.time())
        )

    def _send(self, event: ProgressEvent) -> None:
        task = self._loop.create_task(self._publish(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, event: ProgressEvent) -> None:
        try:
            await publish(self.redis, self.platform, event)
        except (RedisError, OSError) as exc:
            log.debug("job %s: progress event dropped: %s", self.job_id, exc)

    async def aclose(self) -> None:
        """Wait (bounded) for events still being sent."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
