"""The Discord adapter's lifecycle: point discord.py at the API, connect, follow progress."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import aiohttp
import discord
import yarl

from reelbot.bots.discord.backend import Delivery, JobBackend
from reelbot.bots.discord.client import ReelbotClient
from reelbot.bots.discord.intake import Intake, view_for
from reelbot.bots.discord.poster import Poster
from reelbot.bots.discord.throttle import EditThrottle
from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 8.0


def point_at(api_url: str, gateway_url: str | None) -> None:
    """Send discord.py's REST calls and gateway connection to another server (tests, proxies).

    Both are class attributes in discord.py; the gateway also tells the client where to resume
    (READY's resume_gateway_url), so the server must point that here too.
    """
    discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class DiscordAdapter:
    """The running Discord adapter: ``async with`` it; results go to ``deliver``."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog,
        backend: JobBackend,
        edit_interval_s: float = 3.0,
    ) -> None:
        if settings.discord_token is None or not settings.discord_token.get_secret_value():
            raise ConfigError("REELBOT_DISCORD_TOKEN: not set; the Discord adapter needs it")
        self.settings = settings
        guild = int(settings.discord_guild_id) if settings.discord_guild_id else None
        self.client = ReelbotClient(guild_id=guild)
        self.poster = Poster(self.client, throttle=EditThrottle(edit_interval_s), view_for=view_for)
        self.intake = Intake(
            catalog=catalog,
            backend=backend,
            poster=self.poster,
            owner_ids=settings.owner_ids,
        )
        self.client.reelbot_intake = self.intake
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Log in, sync the commands, connect to the gateway and wait for READY."""
        point_at(self.settings.discord_api_url, self.settings.discord_gateway_url)
        assert self.settings.discord_token is not None
        try:
            await self.client.login(self.settings.discord_token.get_secret_value())
            self._tasks.append(asyncio.create_task(self.client.connect(reconnect=True)))
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self.client.wait_until_ready()
        except discord.LoginFailure as exc:
            await self.stop()
            raise ConfigError("REELBOT_DISCORD_TOKEN: Discord refused the token") from exc
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            await self.stop()
            raise BackendUnavailable(
                f"cannot reach Discord at {self.settings.discord_api_url}: {exc}"
            ) from exc
        self._tasks.append(asyncio.create_task(self.intake.follow_progress(self._stop)))

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post a finished job; raises a transient error when it should be retried."""
        return await self.intake.deliver(delivery)

    async def stop(self) -> None:
        """Stop following progress and close the gateway connection, each within a bound."""
        self._stop.set()
        await self.poster.aclose()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.client.close()
        if self._tasks:
            # The progress loop ends by itself within a poll; the gateway task ends with close().
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
                if stuck:
                    log.warning("%d Discord adapter tasks did not stop", len(stuck))
        self._tasks.clear()

    async def __aenter__(self) -> DiscordAdapter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
