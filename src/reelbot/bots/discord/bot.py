"""From interactions to ``ChatService`` calls: acknowledge within 3 s, then Redis; the replies."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import discord
from discord import app_commands

from reelbot.bots.discord import render
from reelbot.bots.discord.buttons import view_of
from reelbot.bots.discord.surface import TOKEN_LIFETIME_S, DiscordSurface
from reelbot.catalog import Task
from reelbot.chat.attachments import Inputs, check_declared_file, has, task_for
from reelbot.chat.commands import IN_WORDS, TextCommands, in_words, press
from reelbot.chat.replies import Button, lookup, reply_for
from reelbot.chat.service import ChatService, Context, Ticket
from reelbot.chat.surface import Conversation, result_buttons, status_buttons
from reelbot.chat.texts import Status, clip
from reelbot.errors import NotAllowed
from reelbot.jobs import JobStatus, Options, ReplyAddress, Requester
from reelbot.queue.delivery import Delivery

log = logging.getLogger(__name__)

PLATFORM = "discord"
Interaction = discord.Interaction[Any]


def requester_of(interaction: Interaction, owner_ids: tuple[str, ...]) -> Requester:
    """Who asked, with admin rights from Manage Server or the configured owners."""
    user = interaction.user
    roles: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        # Discord sends the member's role ids with every interaction and discord.py keeps them
        # as given (Member._roles), but Member.roles resolves them through the guild cache,
        # which stays empty without the GUILDS intent (and after every re-IDENTIFY until
        # GUILD_CREATE): read the raw ids. @everyone (id == guild id) is never a tier.
        raw = getattr(user, "_roles", None)
        ids = [r.id for r in user.roles] if raw is None else list(raw)
        roles = tuple(str(i) for i in ids if i != interaction.guild_id)
    # default_member_permissions only hides commands in Discord's UI; the permission that came
    # with this interaction is what counts.
    owner = f"{PLATFORM}:{user.id}" in owner_ids
    is_admin = bool(interaction.permissions.manage_guild) and interaction.guild_id is not None
    return Requester(
        platform=PLATFORM,
        user_id=str(user.id),
        server_id=str(interaction.guild_id) if interaction.guild_id else None,
        role_ids=roles,
        display_name=user.display_name,
        is_admin=is_admin or owner,
        is_owner=owner,
    )


def _option_words(exc: BaseException) -> str:
    return f"That option is not valid: {exc}"


_DISCORD_ERRORS: dict[type[BaseException], Callable[[BaseException], str]] = dict.fromkeys(
    (app_commands.TransformerError, app_commands.CheckFailure), _option_words
)


def error_text(exc: BaseException) -> str:
    """Chat's words for an error, out of discord.py's wrappers; discord.py's own option errors."""
    while isinstance(exc, app_commands.CommandInvokeError):
        exc = exc.original
    handler = lookup(exc, _DISCORD_ERRORS)
    return handler(exc) if handler is not None else reply_for(exc)


async def send_error(interaction: Interaction, exc: BaseException) -> None:
    """Answer with the error, ephemeral; after a public defer, replace the placeholder."""
    text = clip(error_text(exc), render.MAX_CONTENT)  # however long what it quotes
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            # The public "thinking…" placeholder would otherwise stay forever.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("could not delete the placeholder", exc_info=True)
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error: %s", text, exc_info=True)


class DiscordConversation(Conversation):
    """Chat's conversation, plus Discord's habit of posting a failure under the command."""

    surface: DiscordSurface

    async def show(self, reply: ReplyAddress, ticket: Ticket) -> None:
        """A new job's status, paced with the progress edits of the same message."""
        status = Status(JobStatus.QUEUED, ticket.params.prompt, ticket.position, ticket.eta_s)
        job, buttons = ticket.job_id, status_buttons(ticket.job_id, JobStatus.QUEUED)
        edit = functools.partial(self.surface.edit_status, reply, job, status, None, buttons)
        await self.throttle.run(job, edit)

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post the result, or end the status message and say in a post why the job failed."""
        # The final status edit keeps Discord's pace for the message: no delayed progress edit
        # may come after it, and it waits out the interval since the last one.
        wait = self.throttle.wait_s(delivery.job_id)
        self.throttle.forget(delivery.job_id)
        self.throttle.end(delivery.job_id)
        await asyncio.sleep(wait)
        posted = await super().deliver(delivery)
        record = delivery.record
        if delivery.kind == "notice" and record.status == JobStatus.FAILED:
            return await self.surface.post_text(record, record.error_message)
        return posted


class DiscordBot:
    """The Discord adapter's handlers, called by the slash commands and the buttons."""

    def __init__(self, service: ChatService, conversation: DiscordConversation) -> None:
        self.service, self.conversation = service, conversation
        admins = "Only server admins (Manage Server) can use /admin."
        self.commands = TextCommands(
            service, help_text=lambda: render.HELP_TEXT, not_admin=admins, link=render.jump_link
        )
        self.history = self.commands.history
        self.surface = conversation.surface

    def requester(self, interaction: Interaction) -> Requester:
        """Who asked."""
        return requester_of(interaction, self.service.owner_ids)

    def context(self, interaction: Interaction) -> Context:
        """Who asked, in which channel."""
        channel = str(interaction.channel_id) if interaction.channel_id else None
        return Context(self.requester(interaction), channel_id=channel)

    async def _acknowledge(self, interaction: Interaction) -> ReplyAddress:
        """Defer with a public "thinking…" message: the job's status message from now on.

        Returns where the result goes: this interaction's token while it lives, then the channel.
        """
        if interaction.channel_id is None:
            raise NotAllowed("This command only works in a channel or a DM with the bot.")
        callback = await interaction.response.defer(thinking=True)
        message_id = callback.message_id if callback is not None else None
        if message_id is None:
            message_id = (await interaction.original_response()).id
        return ReplyAddress(
            platform=PLATFORM,
            channel_id=str(interaction.channel_id),
            message_id=str(message_id),
            status_message_id=str(message_id),
            interaction_token=interaction.token,
            interaction_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_S,
            nsfw_channel=bool(getattr(interaction.channel, "nsfw", False)),
            extra={
                "application_id": str(interaction.application_id),
                "max_bytes": str(interaction.filesize_limit),
            },
        )

    async def generate(
        self,
        interaction: Interaction,
        task: Task,
        text: str,
        options: Options,
        files: dict[str, discord.Attachment],
    ) -> None:
        """Check the request and its files (from what Discord declares of them), acknowledge
        it, then download, store and queue; show its status."""
        source, limit = str(interaction.id), interaction.filesize_limit
        for name, file in files.items():
            check_declared_file(name, file.size, file.content_type, max_bytes=limit)
        # Cheap, pure checks before the acknowledgement, so a mistake gets a private answer.
        self.service.plan(task_for(task, files), text, options, source_id=source, **has(files))
        reply = await self._acknowledge(interaction)
        data = {name: await self.surface.fetch_input(file.url) for name, file in files.items()}
        given = Inputs.named(data).as_kwargs(options=options, reply=reply, source_id=source)
        ticket = await self.service.generate(self.context(interaction), task, text, **given)
        await self.conversation.show(reply, ticket)

    async def click(self, interaction: Interaction, button: Button) -> None:
        """A button: cancel from a status message, or re-roll, vary, upscale… a result (image)."""
        try:
            ctx, job = self.context(interaction), button.job_id
            if button.action == "cancel":
                await self.cancel_button(interaction, job)
                return
            if button.action in IN_WORDS:  # privately: Info's spec, Edit region's link
                await self.private(interaction, in_words(self.service, ctx, button))
                return
            # Acknowledge before touching Redis: a slow lookup must not cost the 3 s window.
            reply = await self._acknowledge(interaction)
            said = await press(
                self.service, ctx, button, reply=reply, source_id=str(interaction.id)
            )
            await self.conversation.show(reply, cast(Ticket, said))
        except Exception as exc:
            await send_error(interaction, exc)

    async def show(self, interaction: Interaction, job_id: str) -> None:
        """``/show job``: the stored result again with its buttons, or its settings with Re-run."""
        await interaction.response.defer(thinking=True)
        shown = await self.history.show(self.context(interaction), job_id)
        data, record = shown.data, shown.record
        files = [discord.File(io.BytesIO(data), render.filename_of(record))] if data else []
        await interaction.edit_original_response(
            content=clip(shown.text, render.MAX_CONTENT),
            attachments=files,
            view=view_of(result_buttons(record, edit=shown.edit) if data else shown.buttons),
        )

    async def cancel_button(self, interaction: Interaction, job_id: str) -> None:
        """Cancel from the status message: it says "Cancelled" only once the job is."""
        await interaction.response.defer()  # a deferred update of the message, before Redis
        said = await self.service.cancel(self.context(interaction), job_id)
        if not said.done and said.outcome != "stopping":
            await interaction.followup.send(said.text, ephemeral=True)
            return
        if said.done:  # no later progress or place-in-line edit may undo "Cancelled"
            self.conversation.throttle.end(job_id)
        done, record = said.done, said.record  # not done: "Cancelling…" (chat's Conversation)
        status = Status(record.status, record.request.text, credits_back=done, stopping=not done)
        content = render.status_text(status)
        await interaction.edit_original_response(content=content, view=None)

    # -- the rest of the commands answer privately ------------------------------------------

    async def private(self, interaction: Interaction, answer: Awaitable[str]) -> None:
        """Defer privately (Redis comes after the acknowledgement), then say ``answer``."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = clip(await answer, render.MAX_CONTENT)
        await interaction.followup.send(text, ephemeral=True)

    async def say(self, interaction: Interaction, name: str, rest: str = "") -> None:
        """A command answered in words, privately (chat's ``TextCommands``): /jobs, /cancel,
        /quota, /models, /history and the /admin words (Manage Server, checked again here)."""
        ctx = self.context(interaction)
        self.commands.check(ctx, name)  # a refusal comes at once, not after the deferral

        async def text() -> str:
            return (await self.commands.answer(ctx, name, rest)).text

        await self.private(interaction, text())
