"""A fourth platform that exists only in tests: a chat kept in memory, built on ``reelbot.chat``.

It proves what the README's "Adding a platform" says: a platform is a ``Surface`` (five calls)
plus parsing its events into ``ChatService`` calls. Nothing here knows the queue's rules.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from reelbot.catalog import Task
from reelbot.chat.replies import Button, Reply, reply_for
from reelbot.chat.service import ChatService, Context
from reelbot.chat.surface import Conversation
from reelbot.chat.texts import Status
from reelbot.errors import BackendUnavailable, InvalidPrompt
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
        message = Message(self.new_id(), reply.channel_id, text)
        self.messages[message.id] = message
        return message.id

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        message = self.messages[reply.status_message_id or ""]
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

    async def say(self, user: str, chat: str, text: str, *, group: bool = False) -> str:
        """A member types ``text`` in ``chat``; returns the id of what reelbot answered."""
        requester = Requester(platform=PLATFORM, user_id=user, server_id=chat if group else None)
        ctx = Context(requester, channel_id=chat)
        source = self.chat.new_id()
        try:
            return await self._command(ctx, source, text)
        except Exception as exc:
            await self.chat.answer(ReplyAddress(platform=PLATFORM, channel_id=chat), _err(exc))
            return ""

    async def _command(self, ctx: Context, source: str, text: str) -> str:
        name, _, rest = text.removeprefix("/").partition(" ")
        chat = ctx.channel_id or ""
        if name in {t.value for t in Task}:
            parse_prompt(rest)  # bad flags are answered before anything is posted
            status_id = await self.chat.post_status(
                ReplyAddress(platform=PLATFORM, channel_id=chat), "", "⏳ Queued"
            )
            reply = ReplyAddress(platform=PLATFORM, channel_id=chat, status_message_id=status_id)
            ticket = await self.service.generate(
                ctx, Task(name), rest, reply=reply, source_id=source
            )
            return ticket.job_id
        if name == "cancel":
            said = await self.service.cancel(ctx, rest.strip() or None)
            await self.chat.answer(
                ReplyAddress(platform=PLATFORM, channel_id=chat), Reply(said.text)
            )
            return said.job_id
        if name == "jobs":
            text = await self.service.jobs_text(ctx)
            await self.chat.answer(ReplyAddress(platform=PLATFORM, channel_id=chat), Reply(text))
            return ""
        raise InvalidPrompt(f"/{name[:20]} is not a command here.")

    async def run(self, stop: asyncio.Event) -> None:
        await self.conversation.run(stop)


def _err(exc: BaseException) -> Reply:
    return Reply(reply_for(exc))
