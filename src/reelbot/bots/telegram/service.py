"""The ``reelbot telegram`` process: the bot, its progress listener and its delivery consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, RateLimited
from reelbot.queue.delivery import Delivery, DeliveryConsumer
from reelbot.queue.submit import JobQueue
from reelbot.store.progress import ProgressSubscription

from .app import TelegramAdapter, WebhookConfig
from .delivery import ResultMedia, finish_status, post_result
from .plan import PLATFORM
from .queue_backend import QueueBackend
from .render import prompt_of
from .status import GROUP_INTERVAL_S, PRIVATE_INTERVAL_S

log = logging.getLogger(__name__)

RESUBSCRIBE_MAX_S = 5.0
STOP_TIMEOUT_S = 15.0


def _retry_after_s(exc: RetryAfter) -> float:
    # The public attribute warns about its coming type change; PTB reads the timedelta itself.
    return float(exc._retry_after.total_seconds())


class TelegramService:
    """Runs the adapter with the queue: submits, shows progress, posts results once."""

    def __init__(
        self,
        settings: Settings,
        redis: ArqRedis,
        catalog: Catalog,
        *,
        token: str,
        poll_timeout: int = 10,
        private_interval: float = PRIVATE_INTERVAL_S,
        group_interval: float = GROUP_INTERVAL_S,
        delivery_poll_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.backend = QueueBackend(redis, JobQueue(redis, settings, catalog))
        self.adapter = TelegramAdapter(
            token=token,
            backend=self.backend,
            catalog=catalog,
            api_root=settings.telegram_api_url,
            owner_ids=settings.owner_ids,
            poll_timeout=poll_timeout,
            private_interval=private_interval,
            group_interval=group_interval,
            max_upload_bytes=(
                settings.telegram_max_upload_mb * 1024 * 1024
                if settings.telegram_max_upload_mb
                else None
            ),
        )
        self.consumer = DeliveryConsumer(
            redis, PLATFORM, self.post, settings=settings, poll_delay_s=delivery_poll_s
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def post(self, delivery: Delivery) -> str | None:
        """Post a finished job: the result under the command, or the final state of a failure."""
        record = delivery.record
        bot = self.adapter.application.bot
        board = self.adapter.board
        try:
            if delivery.kind == "result" and delivery.data is not None and record.result:
                info = record.result
                media = ResultMedia(
                    data=delivery.data,
                    mime=info.mime,
                    width=info.width,
                    height=info.height,
                    duration_s=info.frames / info.fps if info.fps else None,
                    spoiler=info.spoiler,
                )
                message = await post_result(
                    bot,
                    board,
                    job_id=record.id,
                    request=record.request,
                    params=record.params,
                    media=media,
                )
                return str(message.message_id)
            prompt = prompt_of(record.request)
            await finish_status(board, record.request, prompt, record.status, record.error_message)
            return None
        except RetryAfter as exc:
            # AIORateLimiter has already waited out several 429s; the queue retries later.
            raise RateLimited(retry_after=_retry_after_s(exc)) from exc
        except BadRequest:
            raise
        except NetworkError as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def _listen_progress(self) -> None:
        """Progress events into status edits; reconnects after a Redis blip."""
        backoff = 0.1
        while True:
            try:
                async with ProgressSubscription(self.redis, PLATFORM) as events:
                    async for event in events:
                        backoff = 0.1
                        progress = await self.backend.progress(event)
                        if progress is not None:
                            try:
                                await self.adapter.layer.on_progress(progress)
                            except TelegramError as exc:
                                log.warning("progress of %s not shown: %s", event.job_id, exc)
            except (RedisError, OSError) as exc:
                # Progress is lossy by design; the next event redraws the bar.
                log.warning("progress subscription lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)

    async def start(self, webhook: WebhookConfig | None = None) -> None:
        """Start the bot (polling, or the webhook when given), then the listeners that need it."""
        await self.adapter.start(webhook)
        self._tasks = [
            asyncio.create_task(self._listen_progress(), name="telegram-progress"),
            asyncio.create_task(self.consumer.async_run(), name="telegram-delivery"),
        ]

    async def stop(self) -> None:
        """Stop taking updates and deliveries; what is not posted waits in Redis."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.consumer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await task
        self._tasks = []
        await self.adapter.stop()

    async def __aenter__(self) -> TelegramService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def webhook_from_settings(settings: Settings) -> WebhookConfig | None:
    """Webhook mode when a public URL is configured; it needs a secret to check each update."""
    from urllib.parse import urlsplit

    from reelbot.errors import ConfigError

    if settings.telegram_webhook_url is None:
        return None
    if settings.telegram_webhook_secret is None:
        raise ConfigError(
            "REELBOT_TELEGRAM_WEBHOOK_SECRET: required with REELBOT_TELEGRAM_WEBHOOK_URL "
            "(1-256 characters A-Z, a-z, 0-9, _ and -)"
        )
    host, _, port = settings.telegram_webhook_listen.rpartition(":")
    path = urlsplit(settings.telegram_webhook_url).path or "/telegram"
    return WebhookConfig(
        url=settings.telegram_webhook_url,
        secret=settings.telegram_webhook_secret.get_secret_value(),
        path=path,
        host=host,
        port=int(port),
    )


CONFLICT_LIMIT = 3
"""409s in a row after which ``reelbot telegram`` stops instead of fighting another poller."""


async def run_telegram(settings: Settings, *, webhook: WebhookConfig | None = None) -> int:
    """Run until SIGINT or SIGTERM; a persistent 409 (another poller) stops it with a clear line."""
    import signal

    from reelbot.catalog import load_catalog
    from reelbot.errors import ConfigError
    from reelbot.store.connection import connect

    from .app import CONFLICT_HELP

    if settings.telegram_token is None:
        raise ConfigError("REELBOT_TELEGRAM_TOKEN: not set; get one from @BotFather")
    catalog = load_catalog(settings.models, settings.styles_file)
    if webhook is None:
        webhook = webhook_from_settings(settings)
    redis = connect(settings.effective_redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = TelegramService(
        settings, redis, catalog, token=settings.telegram_token.get_secret_value()
    )
    try:
        await service.start(webhook)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            if service.adapter.conflicts >= CONFLICT_LIMIT:
                raise ConfigError(CONFLICT_HELP)
    finally:
        await service.stop()
        await redis.aclose(close_connection_pool=True)
    return 0


async def run_up(settings: Settings, stop: asyncio.Event) -> None:
    """Serve Telegram until ``stop`` is set (the ``reelbot up`` hook); off without a token."""
    from reelbot.catalog import load_catalog
    from reelbot.store.connection import connect

    from .app import CONFLICT_HELP

    if settings.telegram_token is None:
        return
    catalog = load_catalog(settings.models, settings.styles_file)
    webhook = webhook_from_settings(settings)
    redis = connect(settings.effective_redis_url)
    service = TelegramService(
        settings, redis, catalog, token=settings.telegram_token.get_secret_value()
    )
    try:
        await service.start(webhook)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            if service.adapter.conflicts >= CONFLICT_LIMIT:
                # Under ``up`` the other adapters keep serving; only Telegram stands down.
                log.error("%s", CONFLICT_HELP)
                break
    finally:
        await service.stop()
        await redis.aclose(close_connection_pool=True)
