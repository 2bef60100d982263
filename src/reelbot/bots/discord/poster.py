"""Posting to Discord without an Interaction object: status edits and results, from the stored
reply address, with the interaction token while it lives and the bot token after."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

import aiohttp
import discord

from reelbot.bots.discord import render
from reelbot.bots.discord.backend import Delivery
from reelbot.chat.throttle import EditThrottle
from reelbot.errors import BackendUnavailable, Cancelled, RateLimited
from reelbot.jobs import JobStatus, ReplyAddress

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60.0
"""An interaction token works for 15 minutes."""
TOKEN_MARGIN_S = 60.0
"""Switch to the bot token this long before the token expires, so an upload never straddles it."""
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
# Error codes that mean the interaction token is no longer usable: Invalid Webhook Token,
# Unknown Webhook, Unknown Interaction.
_TOKEN_GONE = {50027, 10015, 10062}


def _token_gone(exc: discord.HTTPException) -> bool:
    return exc.status == 401 or (exc.status == 404 and exc.code in _TOKEN_GONE)


def size_limit(reply: ReplyAddress) -> int:
    """The upload limit the interaction carried (``attachment_size_limit``)."""
    try:
        return int(reply.extra.get("max_bytes", DEFAULT_SIZE_LIMIT))
    except ValueError:
        return DEFAULT_SIZE_LIMIT


class Poster:
    """Edits status messages (throttled) and posts results for the Discord adapter."""

    def __init__(
        self,
        client: discord.Client,
        *,
        throttle: EditThrottle | None = None,
        clock: Callable[[], float] = time.time,
        view_for: Callable[[str, Delivery], discord.ui.View | None] | None = None,
    ) -> None:
        self.client = client
        self.throttle = throttle or EditThrottle()
        self.clock = clock
        self.view_for = view_for
        self._finished: dict[str, None] = {}  # insertion-ordered, for trimming

    def token_alive(self, reply: ReplyAddress) -> bool:
        """Whether the interaction token can still be used, with a margin."""
        expires = reply.interaction_expires_at
        return (
            bool(reply.interaction_token)
            and expires is not None
            and (self.clock() < expires - TOKEN_MARGIN_S)
        )

    def _webhook(self, reply: ReplyAddress) -> discord.Webhook:
        app_id = reply.extra.get("application_id") or str(self.client.application_id)
        assert reply.interaction_token is not None
        return discord.Webhook.partial(int(app_id), reply.interaction_token, client=self.client)

    def _channel(self, reply: ReplyAddress) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(reply.channel_id))

    async def status(
        self,
        job_id: str,
        reply: ReplyAddress,
        content: str,
        view: discord.ui.View | None,
        *,
        final: bool = False,
    ) -> None:
        """Show a job's state on its status message, at most once per 3 s per message."""
        if reply.status_message_id is None or job_id in self._finished:
            return
        if final:
            self.mark_finished(job_id)

        async def edit() -> None:
            await self._edit_now(reply, content, view)

        await self.throttle.run(reply.status_message_id, edit)

    def mark_finished(self, job_id: str) -> None:
        """No more status edits for this job (a late progress event must not undo its end)."""
        self._finished[job_id] = None
        if len(self._finished) > 10_000:
            # Bounded memory in a long-running process; old jobs get no progress events anyway.
            self._finished = dict.fromkeys(list(self._finished)[-5_000:])

    async def _edit_now(
        self, reply: ReplyAddress, content: str, view: discord.ui.View | None
    ) -> None:
        assert reply.status_message_id is not None
        message_id = int(reply.status_message_id)
        try:
            if self.token_alive(reply):
                try:
                    await self._webhook(reply).edit_message(message_id, content=content, view=view)
                    return
                except discord.HTTPException as exc:
                    if not _token_gone(exc):
                        raise
            # The status message is the bot's own, so the bot token can edit it after expiry.
            await (
                self._channel(reply)
                .get_partial_message(message_id)
                .edit(content=content, view=view)
            )
        except discord.NotFound:
            log.info("status message %s is gone; not editing it", message_id)

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post a finished job: the file with its caption and buttons, or what went wrong.

        Returns the id of the message posted, if one was. A channel or user the bot cannot
        reach (kicked, DMs closed) raises ``discord.Forbidden``: retrying would not help.

        Raises:
            BackendUnavailable: Discord kept failing (after discord.py's own retries); the
                delivery should be retried later.
        """
        try:
            return await self._deliver(delivery, delivery.request.reply)
        except (discord.DiscordServerError, aiohttp.ClientError) as exc:
            raise BackendUnavailable(f"Discord could not be reached: {exc}") from exc
        except discord.RateLimited as exc:
            # Longer than discord.py waits by itself: hand it back to the delivery queue.
            raise RateLimited(retry_after=exc.retry_after) from exc
        except discord.HTTPException as exc:
            if exc.status != 429:
                raise
            # A 429 without Discord's Via header (a Cloudflare ban) is not retried by
            # discord.py; the delivery queue retries it later instead of dropping the result.
            raise RateLimited(retry_after=60.0) from exc

    async def _deliver(self, delivery: Delivery, reply: ReplyAddress) -> str | None:
        request = delivery.request
        job_id = delivery.job_id
        prompt = delivery.params.prompt if delivery.params else request.text
        if delivery.error is not None or delivery.data is None or delivery.params is None:
            error = delivery.error
            status = JobStatus.CANCELLED if isinstance(error, Cancelled) else JobStatus.FAILED
            detail = error.user_message if error else "no result came back."
            await self.status(
                job_id, reply, render.status_text(status, prompt, detail=detail), None, final=True
            )
            if status == JobStatus.FAILED:
                return await self._post(
                    reply, request.requester.user_id, detail_text(delivery), None
                )
            return None
        limit = size_limit(reply)
        if len(delivery.data) > limit:
            text = render.failure_text(
                request,
                f"the result is {len(delivery.data) / 1e6:.1f} MB, over this channel's "
                f"{limit / 1e6:.0f} MB upload limit.",
                mention=False,
            )
            return await self._post(reply, request.requester.user_id, text, None)
        view = self.view_for(job_id, delivery) if self.view_for else None
        filename = delivery.filename or (
            "result.mp4" if delivery.params.task.is_video else "result.png"
        )
        posted = await self._post(
            reply,
            request.requester.user_id,
            render.result_text(request, delivery.params, mention=False, note=delivery.note),
            view,
            (delivery.data, filename),
            caption_params=delivery,
            nonce=job_id,
        )
        done = render.status_text(JobStatus.DELIVERED, prompt)
        await self.status(job_id, reply, done, None, final=True)
        return posted

    async def _post(
        self,
        reply: ReplyAddress,
        user_id: str,
        content: str,
        view: discord.ui.View | None,
        file: tuple[bytes, str] | None = None,
        *,
        caption_params: Delivery | None = None,
        nonce: str | None = None,
    ) -> str | None:
        def as_file() -> discord.File | None:
            return discord.File(io.BytesIO(file[0]), filename=file[1]) if file else None

        missing = discord.utils.MISSING
        if self.token_alive(reply):
            try:
                f = as_file()
                sent = await self._webhook(reply).send(
                    content,
                    file=f if f is not None else missing,
                    view=view if view is not None else missing,
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
        if caption_params is not None and caption_params.params is not None:
            content = render.result_text(
                caption_params.request,
                caption_params.params,
                mention=True,
                note=caption_params.note,
            )
        elif not content.startswith(f"<@{user_id}>"):
            content = render.clip(f"<@{user_id}> {content}", render.MAX_CONTENT)
        reference = None
        if reply.status_message_id is not None:
            reference = discord.MessageReference(
                message_id=int(reply.status_message_id),
                channel_id=int(reply.channel_id),
                fail_if_not_exists=False,
            )
        f = as_file()
        message = await self._channel(reply).send(
            content,
            file=f if f is not None else missing,
            view=view if view is not None else missing,
            reference=reference if reference is not None else missing,
            # With a nonce Discord drops a second post of the same result (enforce_nonce), which
            # covers a delivery re-run after a crash between posting and marking it posted.
            nonce=nonce[-25:] if nonce else missing,
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(int(user_id))]
            ),
        )
        return str(message.id)

    async def aclose(self) -> None:
        """Stop pending status edits."""
        await self.throttle.aclose()


def detail_text(delivery: Delivery) -> str:
    """The failure message posted for a job that did not produce a file."""
    message = delivery.error.user_message if delivery.error else "no result came back."
    return render.failure_text(delivery.request, message, mention=False)
