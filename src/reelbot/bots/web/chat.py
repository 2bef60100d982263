"""The web chat's commands and buttons: parsed into ``ChatService`` calls, answered as JSON."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis

from reelbot.bots.web.views import HELP_TEXT, PLATFORM, job_view, unknown_command
from reelbot.catalog import Catalog, Task
from reelbot.chat.service import ChatService, Context, Rerun, Ticket
from reelbot.config import Settings
from reelbot.errors import InvalidImage, InvalidPrompt, JobNotFound, NotAllowed
from reelbot.jobs import JobStatus, ReplyAddress, Requester

__all__ = ["WebChat"]

RERUNS: dict[str, Rerun] = {"reroll": "reroll", "variations": "vary", "animate": "animate"}
HISTORY_LIMIT = 30
TASKS = {t.value for t in Task}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class WebChat:
    """Commands and buttons from the page. A browser is its own private chat, known only by
    the page's client id."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.catalog = catalog
        self.service = ChatService(redis, settings, catalog, platform=PLATFORM)

    def context(self, client: str) -> Context:
        """The person at one browser; an owner when ``web:CLIENT`` is in REELBOT_OWNER_IDS."""
        plain = Requester(platform=PLATFORM, user_id=client, display_name="you")
        owner = self.service.is_owner(plain)
        return Context(plain.model_copy(update={"is_admin": owner, "is_owner": owner}), client)

    @staticmethod
    def _reply(client: str, message_id: str) -> dict[str, Any]:
        # The page's own message id: a retried POST finds the same job, never a second one.
        reply = ReplyAddress(platform=PLATFORM, channel_id=client)
        return {"reply": reply, "source_id": f"{client}:{message_id}"}

    async def command(
        self, client: str, message_id: str, text: str, image: bytes | None
    ) -> dict[str, Any]:
        """Run one typed command; a generation answers with its job card (status, position)."""
        text = text.strip()
        if not text.startswith("/"):
            raise InvalidPrompt(
                "Commands start with a slash: try /imagine a red fox --seed 7, or /help."
            )
        name, _, rest = text[1:].partition(" ")
        name, ctx = name.lower(), self.context(client)
        if name in TASKS:
            task = Task(name)
            if image is not None and not task.needs_image:
                raise InvalidImage(
                    f"/{task.value} takes no image; use /remix or /animate to start from one."
                )
            where = self._reply(client, message_id)
            return self._card(await self.service.generate(ctx, task, rest, image=image, **where))
        if name == "jobs":
            return _text(await self.service.jobs_text(ctx))
        if name == "cancel":
            return await self.cancel(ctx, rest.strip() or None)
        if name == "models":
            head = f"Models on this deployment ({self.catalog.set_name}):"
            return _text(f"{head}\n{self.service.models_text()}")
        if name == "help":
            return _text(HELP_TEXT)
        if name == "quota":
            quota = await self.service.quota_text(ctx.requester)
            return _text(f"{quota}\nYou are {PLATFORM}:{client} here.")
        if name == "admin":
            if not ctx.requester.is_owner:
                raise NotAllowed(
                    f"/admin is for owners: add {PLATFORM}:{client} to REELBOT_OWNER_IDS, or use "
                    "the operator CLI (reelbot quota …, reelbot jobs …)."
                )
            return _text(await self.service.admin(ctx.requester, rest))
        raise InvalidPrompt(unknown_command(name))

    async def action(
        self, client: str, message_id: str, action: str, job_id: str
    ) -> dict[str, Any]:
        """A button under a job card: re-roll, variations, animate or cancel."""
        ctx = self.context(client)
        if action == "cancel":
            return await self.cancel(ctx, job_id)
        how = RERUNS.get(action)
        if how is None:
            raise InvalidPrompt(f"Unknown button {action[:20]!r}.")
        where = self._reply(client, message_id)
        # Only this browser's own jobs: a job id is all a click carries.
        return self._card(await self.service.rerun(ctx, job_id, how, same_chat=True, **where))

    async def cancel(self, ctx: Context, job_id: str | None) -> dict[str, Any]:
        """The job's card with the cancel answer under it (owners may cancel any web job)."""
        said = await self.service.cancel(ctx, job_id)
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

    async def media(self, job_id: str, *, client: str) -> tuple[bytes, str] | None:
        """A web job's stored result and its content type, for its client or an owner."""
        return await self.service.result_for(self.context(client), job_id)
