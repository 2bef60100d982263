"""The PTB handlers: parse a message or a button press into a ``ChatService`` call and answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

from telegram import Message, Update
from telegram import User as TgUser
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import ContextTypes

from reelbot.catalog import Task
from reelbot.chat.albums import Albums, check_whole, fetched, planned
from reelbot.chat.commands import IN_WORDS, TextCommands, in_words, is_generation
from reelbot.chat.followups import Rerun
from reelbot.chat.replies import Reply
from reelbot.chat.service import ChatService, Context, Ticket
from reelbot.chat.surface import repost, submit_with_status
from reelbot.chat.texts import help_text
from reelbot.errors import JobNotFound, NotAllowed
from reelbot.jobs import Options, ReplyAddress, job_id_for, parse_prompt

from .parse import command_of, find_inputs
from .render import decode_button
from .surface import REPLY_TIMEOUT_S, TelegramSurface

log = logging.getLogger(__name__)

PLATFORM = "telegram"
SUBMIT_GRACE_S = 1.0
"""A Cancel press this soon after the status message may come before the job is queued."""
ALERT_LIMIT = 200
"""answerCallbackQuery shows at most 200 characters."""
ACK = {"reroll": "Re-rolling…", "vary": "Making variations…", "animate": "Animating…"}
ACK["upscale"] = "Upscaling…"
START_FIRST = "The link goes to our private chat: open @%s, press Start, then Edit region again."
SENT = "I sent you the link in our private chat."


class CommandLayer:
    """Everything the bot does for a message or a button press."""

    def __init__(
        self, service: ChatService, surface: TelegramSurface, *, max_upload_bytes: int | None
    ) -> None:
        self.service, self.surface, self.bot = service, surface, surface.bot
        admins = "Only this group's administrators can use /admin."
        self.commands = TextCommands(service, help_text=self._help, not_admin=admins)
        self.extra = {"max_bytes": str(max_upload_bytes)} if max_upload_bytes else {}
        """For a local Bot API server, which takes far bigger files; the worker encodes to it."""
        self.albums: Albums[Message] = Albums()

    # -- who and where ---------------------------------------------------------------------

    async def _ctx(self, chat_id: int, user: TgUser, *, ask_admin: bool = False) -> Context:
        """Who asked, where; a group (negative id) is the "server" quotas count in. Admin rights
        are asked live, only where they count, and never of an owner (admin everywhere)."""
        group = str(chat_id) if chat_id < 0 else None
        who = self.service.requester(str(user.id), server_id=group, display_name=user.full_name)
        if ask_admin and not who.is_owner and await self._is_admin(chat_id, user.id):
            who = who.model_copy(update={"is_admin": True})
        return Context(who, channel_id=str(chat_id))

    async def _is_admin(self, chat_id: int, user_id: int) -> bool:
        """Whether the user administers this group (asked live, never cached); never in private."""
        if chat_id > 0:
            return False
        try:
            member = await self.bot.get_chat_member(chat_id, user_id, read_timeout=REPLY_TIMEOUT_S)
        except TelegramError:
            return False
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    def _address(self, message: Message, thread_id: str | None = None) -> ReplyAddress:
        if thread_id is None and message.is_topic_message and message.message_thread_id:
            thread_id = str(message.message_thread_id)
        return ReplyAddress(
            platform=PLATFORM,
            channel_id=str(message.chat.id),
            message_id=str(message.message_id),
            thread_id=thread_id,
            extra=self.extra,
        )

    def _help(self) -> str:
        how = "send it with the command as its caption, an album for several, or reply to it"
        return help_text(how, footer=f"In groups, address me as /imagine@{self.bot.username}.")

    async def _say(self, message: Message, text: str) -> None:
        await self.surface.answer(self._address(message), Reply(text, private=False))

    # -- messages --------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Route a command in a message text or photo caption."""
        message = update.effective_message
        if message is None or (user := message.from_user) is None:
            return
        album = None
        if group := message.media_group_id:  # each part of an album comes as its own message
            if (album := await self.albums.collect(group, message.message_id, message)) is None:
                return
            message = next((m for m in album if command_of(m, self.bot.username)), message)
        if (command := command_of(message, self.bot.username)) is None:
            return
        name, args = command.name, command.args
        ask = name in ("cancel", "admin")  # admin rights are asked live: only where they count
        ctx = await self._ctx(message.chat.id, user, ask_admin=ask)
        if is_generation(name):
            await self.start_task(message, ctx, Task(name), args, album)
        elif self.commands.knows(name := "help" if name == "start" else name):
            said = await self.commands.answer(ctx, name, args)
            if said.shown is not None:  # /show: the result again, in this chat
                await repost(self.surface, self._address(message), said.shown)
            else:
                await self._say(message, said.text)
        elif message.chat.type == ChatType.PRIVATE:
            # In groups other bots' commands come through as well; only answer in private.
            await self._say(message, f"I don't know /{name}. See /help.")

    async def start_task(
        self, message: Message, ctx: Context, task: Task, text: str, album: list[Message] | None
    ) -> None:
        """A generation command: check it, fetch its inputs, show a status message, submit."""
        wants = task.needs_image or task.needs_video
        check_whole(album)  # in a group, privacy mode keeps an album's other parts from us
        group = replied.media_group_id if (replied := message.reply_to_message) else None
        found = find_inputs(message, album, self.albums.finished(group), clips=task.needs_video)
        found = found if wants else []
        source_id = f"{message.chat.id}:{message.message_id}"
        self.service.plan(text=text, options=Options(), source_id=source_id, **planned(task, found))
        job_id = job_id_for(PLATFORM, source_id)
        # Telegram re-sends updates that were not confirmed before a restart: one job per update.
        if await self.service.request_of(job_id) is not None:
            log.info("duplicate update for job %s ignored", job_id)
            return
        inputs = await fetched(task, found, self.surface.fetch_input)
        run = partial(self.service.generate, ctx, task, text, source_id=source_id, **inputs)
        await self._queue(self._address(message), job_id, text, run)

    async def _queue(
        self,
        where: ReplyAddress,
        job_id: str,
        prompt: str,
        run: Callable[..., Awaitable[Ticket]],
    ) -> None:
        """Post the status message, then submit: ``run(reply=…)`` (chat's submit_with_status)."""
        queued = await submit_with_status(self.surface, where, job_id, prompt, run)
        if queued is not None and queued[0].duplicate:  # the status message of a job twice
            where = queued[1]
            await self.bot.delete_message(int(where.channel_id), int(where.status_message_id or 0))

    # -- buttons ---------------------------------------------------------------------------

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Re-roll, variations, animate or cancel, from an inline button."""
        query = update.callback_query
        if query is None:
            return
        press = decode_button(query.data)
        message = query.message
        if press is None or not isinstance(message, Message):
            await query.answer("This button no longer works; send the command again.")
            return
        action, job_id, how = press.action, press.job_id, cast(Rerun, press.action)
        ctx = await self._ctx(message.chat.id, query.from_user, ask_admin=action == "cancel")
        if action == "cancel":
            try:
                said = await self.service.cancel(ctx, job_id)
            except JobNotFound:
                await asyncio.sleep(SUBMIT_GRACE_S)  # the button goes out just before the submit
                said = await self.service.cancel(ctx, job_id)
            await query.answer(said.text[:ALERT_LIMIT])
            return
        if action in IN_WORDS:  # Info under the result; Edit region's link to the presser alone
            words, me = await in_words(self.service, ctx, press), str(query.from_user.id)
            alone = ReplyAddress(platform=PLATFORM, channel_id=me)
            try:
                await self.surface.answer(
                    alone if action == "edit" else self._address(message), Reply(words, False)
                )
            except (Forbidden, BadRequest) as exc:  # no private chat with the bot yet
                raise NotAllowed(START_FIRST % self.bot.username) from exc
            await query.answer(SENT if action == "edit" and message.chat.id < 0 else None)
            return
        old = await self.service.request_of(job_id)
        if old is None:
            await query.answer("That job has expired; send the command again.", show_alert=True)
            return
        source_id = f"cb:{query.id}"
        new_id = job_id_for(PLATFORM, source_id)
        if await self.service.request_of(new_id) is not None:
            return  # a re-delivered press
        await query.answer(ACK.get(action, "Starting…"))
        run = partial(self.service.rerun, ctx, job_id, how, source_id=source_id, index=press.index)
        where = self._address(message, old.reply.thread_id)
        await self._queue(where, new_id, parse_prompt(old.text)[0], run)
