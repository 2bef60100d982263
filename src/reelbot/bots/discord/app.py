"""The Discord adapter: the discord.py client and its lifecycle (point discord.py at the API,
connect, sync the commands, follow progress, post results)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord
import yarl

from reelbot.bots.discord.bot import DiscordBot, DiscordConversation
from reelbot.bots.discord.buttons import JobButton, answer_unknown
from reelbot.bots.discord.commands import Tree, build_tree
from reelbot.bots.discord.surface import DiscordSurface
from reelbot.chat.service import ChatService
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, ConfigError
from reelbot.runtime.supervise import Backoff, BestEffort

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 8.0
SYNC_RETRY = Backoff(first_s=2.0, max_s=300.0)
"""Between tries of the command sync, which the bot can run without (the old commands stay)."""
SYNC_ATTEMPTS = 12


def point_at(api_url: str, gateway_url: str | None) -> None:
    """Send discord.py's REST calls and gateway connection to another server (tests, proxies).

    Both are class attributes in discord.py; the gateway also tells the client where to resume
    (READY's resume_gateway_url), so the server must point that here too.
    """
    discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class ReelbotClient(discord.Client):
    """A gateway client that dispatches commands and buttons to the adapter's handlers."""

    def __init__(self, *, guild_id: int | None = None) -> None:
        # Slash commands and buttons arrive as interactions, which need no intents at all.
        # Without the guilds intent no GUILD_CREATE follows READY, so discord.py's wait for them
        # (2 s by default) only delays start-up.
        # Prompts are echoed in status messages and captions: "@everyone" or a role mention in
        # one must never ping. Every send and edit defaults to no mentions; the one post that
        # must notify its requester names that user explicitly.
        super().__init__(
            intents=discord.Intents.none(),
            guild_ready_timeout=0.1,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.tree: Tree = build_tree(self)
        self.guild_id = guild_id
        self.reelbot_bot: DiscordBot | None = None

    async def setup_hook(self) -> None:
        """Register the persistent buttons (the commands are synced after READY, by the app)."""
        self.add_dynamic_items(JobButton)

    async def on_interaction(self, interaction: discord.Interaction[discord.Client]) -> None:
        """Answer the buttons no handler takes."""
        await answer_unknown(interaction)


class DiscordAdapter:
    """The running Discord adapter: ``async with`` it; it follows progress and posts results."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: ChatService,
        edit_interval_s: float = 3.0,
        delivery_poll_s: float = 0.5,
        positions_every_s: float = 5.0,
    ) -> None:
        if settings.discord_token is None or not settings.discord_token.get_secret_value():
            raise ConfigError("REELBOT_DISCORD_TOKEN: not set; the Discord adapter needs it")
        self.settings = settings
        guild = int(settings.discord_guild_id) if settings.discord_guild_id else None
        # The commands are synced after READY (see start), where a failure cannot stop login.
        self.client = ReelbotClient(guild_id=guild)
        self.extras = BestEffort(
            retry_if=_worth_retrying, backoff=SYNC_RETRY, attempts=SYNC_ATTEMPTS
        )
        self.surface = DiscordSurface(self.client)
        self.conversation = DiscordConversation(
            service,
            self.surface,
            settings,
            edit_interval_s=edit_interval_s,
            delivery_poll_s=delivery_poll_s,
            positions_every_s=positions_every_s,
        )
        self.client.reelbot_bot = DiscordBot(service, self.conversation)
        self._gateway: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Log in, sync the commands, connect to the gateway and wait for READY."""
        point_at(self.settings.discord_api_url, self.settings.discord_gateway_url)
        assert self.settings.discord_token is not None
        try:
            await self.client.login(self.settings.discord_token.get_secret_value())
            self._gateway = asyncio.create_task(self.client.connect(reconnect=True))
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
        # Discord keeps the commands of the last sync: a failed one is retried in the background.
        await self.extras.call("Discord command sync", self._sync_commands)
        self.conversation.start()

    async def _sync_commands(self) -> None:
        """Publish the slash commands (to one guild when configured, where updates show at once)."""
        tree = self.client.tree
        if self.client.guild_id is None:
            synced = await tree.sync()
        else:
            guild = discord.Object(self.client.guild_id)
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
        log.info("synced %d commands", len(synced))

    async def stop(self) -> None:
        """Stop following progress and posting, and close the gateway, each within a bound.

        A post in flight goes back to the delivery queue and is made after a restart.
        """
        # The conversation ends within a poll, or sooner when the client's close fails a post.
        conversation = asyncio.create_task(self.conversation.stop(STOP_TIMEOUT_S))
        await self.extras.aclose()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.client.close()
        await conversation
        gateway, self._gateway = self._gateway, None
        if gateway is not None:  # it ends with close(); cancelled past the bound
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await gateway

    async def __aenter__(self) -> DiscordAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _worth_retrying(exc: Exception) -> bool:
    """A 5xx, a rate limit or a network failure; a 4xx (a bad command tree) will not get better."""
    if isinstance(exc, discord.HTTPException):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, OSError | aiohttp.ClientError | TimeoutError | discord.RateLimited)
