"""The web chat's commands and buttons: parsed into ``ChatService`` calls, answered as JSON."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis

from reelbot.bots.web.views import PLATFORM, job_view
from reelbot.catalog import Catalog, Task
from reelbot.chat.commands import TextCommands, is_generation, press, split_command
from reelbot.chat.replies import Button
from reelbot.chat.service import CancelAnswer, ChatService, Context, Ticket
from reelbot.chat.texts import help_text
from reelbot.chat.uploads import Upload, sort_uploads
from reelbot.config import Settings
from reelbot.errors import JobNotFound
from reelbot.jobs import JobStatus, ReplyAddress

__all__ = ["WebChat"]

OLD_NAMES = {"variations": "vary"}
"""The page's name of a button before it used chat's action names."""
HISTORY_LIMIT = 30
ATTACH = "attach an image to the command"
NOT_ADMIN = (
    "/admin is for owners: add your web:ID (see /quota) to REELBOT_OWNER_IDS, or use the "
    "operator CLI (reelbot quota …, reelbot jobs …)."
)


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class WebChat:
    """Commands and buttons from the page. A browser is its own private chat, known only by
    the page's client id."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.catalog = catalog
        self.service = ChatService(redis, settings, catalog, platform=PLATFORM)
        self.commands = TextCommands(
            self.service, help_text=lambda: help_text(ATTACH), not_admin=NOT_ADMIN
        )

    def context(self, client: str) -> Context:
        """The person at one browser; an owner when ``web:CLIENT`` is in REELBOT_OWNER_IDS."""
        return Context(self.service.requester(client, display_name="you"), client)

    @staticmethod
    def _reply(client: str, message_id: str) -> dict[str, Any]:
        # The page's own message id: a retried POST finds the same job, never a second one.
        reply = ReplyAddress(platform=PLATFORM, channel_id=client)
        return {"reply": reply, "source_id": f"{client}:{message_id}"}

    async def command(
        self, client: str, message_id: str, text: str, *files: Upload, mask: Upload | None = None
    ) -> dict[str, Any]:
        """Run one typed command with its files; a generation answers with its job card."""
        name, rest = split_command(text)
        ctx = self.context(client)
        if not is_generation(name):
            said = await self.commands.answer(ctx, name, rest)
            if said.shown is not None and said.shown.data is not None:  # /show: the card again
                return job_view(said.shown.record, delivered=True)
            return _text(said.text) if said.cancel is None else self._cancelled(said.cancel)
        inputs = sort_uploads(Task(name), files, mask).as_kwargs()
        where = self._reply(client, message_id)
        return self._card(await self.service.generate(ctx, Task(name), rest, **inputs, **where))

    async def action(
        self, client: str, msg: str, action: str, job_id: str, index: int | None = None, **edit: Any
    ) -> dict[str, Any]:
        """A button under a card (``index``: image i of a grid; ``edit``: the editor's mask)."""
        ctx = self.context(client)
        if action == "cancel":
            return self._cancelled(await self.service.cancel(ctx, job_id))
        button = Button(OLD_NAMES.get(action, action), job_id, "", index)
        # Only this browser's own jobs: a job id is all a click carries.
        where = self._reply(client, msg)
        said = await press(self.service, ctx, button, same_chat=True, **where, **edit)
        return _text(said) if isinstance(said, str) else self._card(said)

    @staticmethod
    def _cancelled(said: CancelAnswer) -> dict[str, Any]:
        """The job's card with the cancel answer under it (owners may cancel any web job)."""
        view = job_view(said.record)
        view["notice"] = said.text
        return view

    @staticmethod
    def _card(ticket: Ticket) -> dict[str, Any]:
        if ticket.record is None:
            raise JobNotFound("That job is gone already; run the command again.")
        return job_view(ticket.record, position=ticket.position, eta_s=ticket.eta_s)

    async def history(self, client: str) -> list[dict[str, Any]]:
        """The client's recent jobs, oldest first, for the chat log and the gallery."""
        records = await self.service.history(self.context(client), limit=HISTORY_LIMIT)
        return [
            job_view(r, delivered=r.status == JobStatus.DELIVERING and r.posted_at is not None)
            for r in reversed(records)
        ]

    async def media(
        self, job_id: str, *, client: str, part: int | None = None
    ) -> tuple[bytes, str] | None:
        """A web job's stored result (``part``: a grid's image) and its type, for its client."""
        return await self.service.result_for(self.context(client), job_id, part)
