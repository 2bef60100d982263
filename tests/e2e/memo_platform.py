"""A fourth platform that exists only in tests: a chat kept in memory, built on ``reelbot.chat``.

It proves what the README's "Adding a platform" says: a platform is a ``Surface`` (five calls)
plus parsing its events into ``ChatService`` calls. Nothing here knows the queue's rules.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from reelbot.catalog import Task
from reelbot.chat.commands import TextCommands, is_generation, press, split_command
from reelbot.chat.replies import Button, Reply, reply_for
from reelbot.chat.service import ChatService, Context, Ticket
from reelbot.chat.surface import Conversation, repost
from reelbot.chat.texts import Status
from reelbot.errors import BackendUnavailable
from reelbot.jobs import ReplyAddress, Requester, parse_prompt
from reelbot.store.records import JobRecord

PLATFORM = "memo"


@dataclass
class Message:
    """One message in a memo chat, as its members see it."""

    id: str
    chat: str
    text: str
    buttons: tuple[Button, ...] = ()
    file: bytes | None = None
    preview: bytes | None = None
    edits: int = 0


@dataclass
class MemoChat:
    """The platform itself: chats of messages, and the surface reelbot draws on."""

    messages: dict[str, Message] = field(default_factory=dict)
    private: list[tuple[str, str]] = field(default_factory=list)
    inputs: dict[str, bytes] = field(default_factory=dict)
    refuse: Exception | None = None
    """What every upload raises, as a platform that refuses files would."""
    flaky: int = 0
    """Uploads that fail as a platform having a bad minute does, before they go through."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return str(next(self._ids))

    def in_chat(self, chat: str) -> list[Message]:
        return [m for m in self.messages.values() if m.chat == chat]

    # -- Surface ---------------------------------------------------------------------------

    async def post_status(self, reply: ReplyAddress, job_id: str, text: str) -> str | None:
        key = reply.status_message_id or self.new_id()
        self.messages[key] = Message(key, reply.channel_id, text)
        return key

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        key = reply.status_message_id or ""
        message = self.messages.setdefault(key, Message(key, reply.channel_id, ""))
        message.text, message.preview, message.buttons = status.text, preview, buttons
        message.edits += 1

    async def post_result(
        self, record: JobRecord, data: bytes, buttons: tuple[Button, ...]
    ) -> str | None:
        if self.refuse is not None:
            raise self.refuse
        if self.flaky > 0:
            self.flaky -= 1
            raise BackendUnavailable("the memo server answered 503")
        message = Message(self.new_id(), record.request.reply.channel_id, record.params.summary())
        message.file, message.buttons = data, buttons
        self.messages[message.id] = message
        return message.id

    async def answer(self, reply: ReplyAddress, answer: Reply) -> None:
        self.private.append((reply.channel_id, answer.text))

    async def fetch_input(self, ref: str) -> bytes:
        return self.inputs[ref]


class MemoBot:
    """The adapter: memo events in, ``ChatService`` calls, replies drawn on the chat."""

    def __init__(self, service: ChatService, chat: MemoChat, conversation: Conversation) -> None:
        self.service, self.chat, self.conversation = service, chat, conversation
        self.commands = TextCommands(service, help_text=lambda: "memo help", not_admin="no")

    async def say(
        self, user: str, chat: str, what: str | Button, *, group: bool = False, **inputs: Any
    ) -> str:
        """A member types a command (or presses a button) in ``chat``; returns the job's id."""
        requester = Requester(platform=PLATFORM, user_id=user, server_id=chat if group else None)
        ctx, here = Context(requester, chat), ReplyAddress(platform=PLATFORM, channel_id=chat)
        try:
            said = await self._command(ctx, here, what, inputs)
        except Exception as exc:
            said = reply_for(exc)
        if isinstance(said, Ticket):
            return said.job_id
        await self.chat.answer(here, Reply(said))
        return ""

    async def _command(
        self, ctx: Context, here: ReplyAddress, what: str | Button, inputs: dict[str, Any]
    ) -> Ticket | str:
        status_id = self.chat.new_id()  # Info answers; other buttons start the presser's job
        reply = here.model_copy(update={"status_message_id": status_id})
        if isinstance(what, Button):
            return await press(self.service, ctx, what, reply=reply, source_id=status_id)
        name, rest = split_command(what)
        if is_generation(name):
            parse_prompt(rest)  # bad flags are answered before anything is posted
            await self.chat.post_status(reply, "", "⏳ Queued")
            return await self.service.generate(
                ctx, Task(name), rest, reply=reply, source_id=status_id, **inputs
            )
        said = await self.commands.answer(ctx, name, rest)
        if said.shown is not None:
            await repost(self.chat, here, said.shown)
        return said.cancel.text if said.cancel else said.text

    async def run(self, stop: asyncio.Event) -> None:
        await self.conversation.run(stop)
