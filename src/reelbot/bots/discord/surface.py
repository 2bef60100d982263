"""``Surface`` for Discord: status edits and posts from a stored reply address, with the
interaction token while it lives (15 min) and the bot token after; attachment downloads."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import discord

from reelbot.bots.discord import render
from reelbot.bots.discord.buttons import view_of
from reelbot.chat.replies import Button, Reply
from reelbot.chat.texts import Status, clip
from reelbot.errors import BackendUnavailable, InvalidImage, RateLimited
from reelbot.jobs import ReplyAddress
from reelbot.store.records import JobRecord

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60.0
"""An interaction token works for 15 minutes."""
TOKEN_MARGIN_S = 60.0
"""Switch to the bot token this long before the token expires, so an upload never straddles it."""
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0
# Error codes that mean the interaction token is no longer usable: Invalid Webhook Token,
# Unknown Webhook, Unknown Interaction.
_TOKEN_GONE = {50027, 10015, 10062}
_MISSING = discord.utils.MISSING


def _token_gone(exc: discord.HTTPException) -> bool:
    return exc.status == 401 or (exc.status == 404 and exc.code in _TOKEN_GONE)


def size_limit(reply: ReplyAddress) -> int:
    """The upload limit the interaction carried (``attachment_size_limit``)."""
    given = reply.extra.get("max_bytes", "")
    return int(given) if given.isdigit() else DEFAULT_SIZE_LIMIT


@contextmanager
def retryable() -> Iterator[None]:
    """Discord's transient failures as the errors the delivery queue retries; a 4xx stays."""
    try:
        yield
    except (discord.DiscordServerError, aiohttp.ClientError) as exc:
        raise BackendUnavailable(f"Discord could not be reached: {exc}") from exc
    except discord.RateLimited as exc:  # longer than discord.py waits by itself
        raise RateLimited(retry_after=exc.retry_after) from exc
    except discord.HTTPException as exc:
        if exc.status != 429:
            raise
        # A 429 without Discord's Via header (a Cloudflare ban) is not retried by discord.py.
        raise RateLimited(retry_after=60.0) from exc


class DiscordSurface:
    """The five ``Surface`` calls over discord.py's REST client."""

    def __init__(self, client: discord.Client, *, clock: Callable[[], float] = time.time) -> None:
        self.client, self.clock = client, clock

    def token_alive(self, reply: ReplyAddress) -> bool:
        """Whether the interaction token can still be used, with a margin."""
        expires = reply.interaction_expires_at
        return bool(reply.interaction_token) and (
            expires is not None and self.clock() < expires - TOKEN_MARGIN_S
        )

    def _webhook(self, reply: ReplyAddress) -> discord.Webhook:
        app_id = reply.extra.get("application_id") or str(self.client.application_id)
        assert reply.interaction_token is not None
        return discord.Webhook.partial(int(app_id), reply.interaction_token, client=self.client)

    def _channel(self, reply: ReplyAddress) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(reply.channel_id))

    # -- Surface ---------------------------------------------------------------------------

    async def post_status(self, reply: ReplyAddress, job_id: str, text: str) -> str | None:
        """A status message in the channel (commands use their deferred response instead)."""
        return str((await self._channel(reply).send(clip(text, render.MAX_CONTENT))).id)

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        """Show a job's state on its status message (the command's deferred response), with
        the step preview attached while it runs; the last preview goes when the job ends."""
        if reply.status_message_id is None:
            return
        content, view = render.status_text(status), view_of(buttons)
        message_id = int(reply.status_message_id)

        def edit() -> dict[str, Any]:  # a File is closed once sent: fresh ones per try
            # "attachments" replaces the message's (Discord's edit): [] drops the last preview.
            files = [discord.File(io.BytesIO(preview), "preview.jpg")] if preview else _MISSING
            return {"content": content, "view": view, "attachments": [] if done else files}

        done = status.status.finished
        try:
            if self.token_alive(reply):
                try:
                    await self._webhook(reply).edit_message(message_id, **edit())
                    return
                except discord.HTTPException as exc:
                    if not _token_gone(exc):
                        raise
            # The status message is the bot's own, so the bot token can edit it after expiry.
            message = self._channel(reply).get_partial_message(message_id)
            await message.edit(**edit())
        except discord.NotFound:
            log.info("status message %s is gone; not editing it", message_id)

    async def post_result(
        self, record: JobRecord, data: bytes, buttons: tuple[Button, ...]
    ) -> str | None:
        """Post the file with its caption and buttons (a file over the channel's upload limit
        is said in words). Discord's transient failures raise errors worth a retry."""
        request, limit = record.request, size_limit(record.request.reply)
        if len(data) > limit:
            said = f"the result is {len(data) / 1e6:.1f} MB, over this channel's "
            return await self.post_text(record, said + f"{limit / 1e6:.0f} MB upload limit.")
        note = record.result.note if record.result else ""
        caption = functools.partial(render.result_text, request, record.params, note=note)
        with retryable():
            return await self._post(
                record, caption, view_of(buttons), (data, render.filename_of(record))
            )

    async def post_text(self, record: JobRecord, message: str | None) -> str | None:
        """Post what went wrong with a job, under its command."""
        with retryable():
            return await self._post(
                record, functools.partial(render.failure_text, record.request, message)
            )

    async def answer(self, reply: ReplyAddress, answer: Reply) -> None:
        """A private followup while the token lives, else a post in the channel."""
        text = clip(answer.text, render.MAX_CONTENT)
        if self.token_alive(reply):
            await self._webhook(reply).send(text, ephemeral=answer.private)
        else:
            await self._channel(reply).send(text)

    async def fetch_input(self, ref: str) -> bytes:
        """Download an attachment from Discord's CDN; a failure is said in words."""
        try:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
                return await self.client.http.get_from_cdn(ref)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            status = f" (HTTP {exc.status})" if isinstance(exc, discord.HTTPException) else ""
            raise InvalidImage(
                f"The attachment could not be downloaded from Discord{status}. Attach it again."
            ) from exc

    # -- posting ---------------------------------------------------------------------------

    async def _post(
        self,
        record: JobRecord,
        text: Callable[..., str],
        view: discord.ui.View | None = None,
        file: tuple[bytes, str] | None = None,
    ) -> str | None:
        """Post ``text(mention=False)`` by the interaction token, or after it expired
        ``text(mention=True)`` in the channel."""

        def upload() -> discord.File:  # a File is closed once sent: a fresh one per try
            return discord.File(io.BytesIO(file[0]), filename=file[1]) if file else _MISSING

        reply = record.request.reply
        view = view if view is not None else _MISSING
        if self.token_alive(reply):
            try:
                sent = await self._webhook(reply).send(
                    text(mention=False),
                    file=upload(),
                    view=view,
                    wait=True,
                    allowed_mentions=discord.AllowedMentions.none(),
                )
                return str(sent.id)
            except discord.HTTPException as exc:
                if not _token_gone(exc):
                    raise
                log.info("interaction token gone; posting to channel %s", reply.channel_id)
        # After 15 minutes only the bot token works: post in the channel, replying to the status
        # message and mentioning the user so they still get notified.
        reference = _MISSING
        if reply.status_message_id is not None:
            reference = discord.MessageReference(
                message_id=int(reply.status_message_id),
                channel_id=int(reply.channel_id),
                fail_if_not_exists=False,
            )
        message = await self._channel(reply).send(
            text(mention=True),
            file=upload(),
            view=view,
            reference=reference,
            # With a nonce Discord drops a second post of the same job (enforce_nonce), which
            # covers a delivery re-run after a crash between posting and marking it posted.
            nonce=record.id[-25:],
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(int(record.requester.user_id))]
            ),
        )
        return str(message.id)
