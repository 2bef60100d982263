"""Typed commands for the platforms that read a line of text: ``/name rest`` into ChatService calls.

Telegram, the web chat and any text platform share this table, so ``/jobs``, ``/cancel``,
``/quota``, ``/models``, ``/help`` and ``/admin`` mean the same everywhere. A generation command
is the platform's to start (it may post a status message or fetch an attachment first);
``split_command`` and ``is_generation`` tell it which one it has.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast, get_args

from reelbot.catalog import Task
from reelbot.chat.edit_links import EditLinks, edit_region
from reelbot.chat.followups import Rerun
from reelbot.chat.history import History, Shown
from reelbot.chat.replies import Button
from reelbot.chat.service import CancelAnswer, ChatService, Context, Ticket
from reelbot.errors import InvalidPrompt, NotAllowed
from reelbot.jobs import ReplyAddress
from reelbot.store.records import JobRecord

__all__ = [
    "IN_WORDS",
    "Answer",
    "TextCommands",
    "in_words",
    "is_generation",
    "press",
    "split_command",
    "unknown_command",
]

GENERATION = frozenset(t.value for t in Task if t.is_command)
GENERAL = ("jobs", "cancel", "models", "help", "quota", "admin", "history", "show")
NAMES = (*GENERATION, *GENERAL)
"""Every command a text platform answers, for ``/help`` and the did-you-mean hint."""


def split_command(text: str) -> tuple[str, str]:
    """``("imagine", "a fox --seed 7")`` from ``/imagine a fox --seed 7`` (name in lower case)."""
    text = text.strip()
    if not text.startswith("/"):
        raise InvalidPrompt(
            "Commands start with a slash: try /imagine a red fox --seed 7, or /help."
        )
    name, _, rest = text[1:].partition(" ")
    return name.lower(), rest.strip()


def is_generation(name: str) -> bool:
    """Whether ``/name`` starts a job (imagine, remix, video, animate…)."""
    return name in GENERATION


async def press(
    service: ChatService,
    ctx: Context,
    button: Button,
    *,
    reply: ReplyAddress,
    source_id: str,
    same_chat: bool = False,
    text: str = "",
    mask: bytes | None = None,
) -> Ticket | str:
    """A button under a result (cancel is the platform's: it edits the status in place): Info
    answers in words, and so does Edit region (its link) unless it brings the web editor's
    ``mask`` and ``text``; any other starts a job of the presser's own, on their quota.
    ``same_chat``: see ``ChatService.rerun``."""
    if button.action == "edit" and mask is not None:
        record = await History(service).job(ctx, button.job_id, posted_here=True)
        return await edit_region(
            service, ctx, record, text, mask, reply=reply, source_id=source_id, index=button.index
        )
    if button.action in IN_WORDS:
        return await in_words(service, ctx, button)
    if button.action not in get_args(Rerun):
        raise InvalidPrompt("That button isn't one reelbot knows; run the command again.")
    how = cast(Rerun, button.action)
    return await service.rerun(
        ctx,
        button.job_id,
        how,
        reply=reply,
        source_id=source_id,
        index=button.index,
        same_chat=same_chat,
    )


IN_WORDS = frozenset({"info", "edit"})
"""The buttons answered in words to the presser alone: Info's spec, Edit region's link."""


async def in_words(service: ChatService, ctx: Context, button: Button) -> str:
    """The answer to an Info or Edit region press (``IN_WORDS``), to show the presser only."""
    if button.action == "edit":
        return await EditLinks(service).offer(ctx, button.job_id)
    return await History(service).info(ctx, button.job_id)


def unknown_command(name: str) -> str:
    """The answer to a command that does not exist, with the nearest one."""
    close = difflib.get_close_matches(name.lower(), NAMES, n=1)
    hint = f" Did you mean /{close[0]}?" if close else ""
    return f"Unknown command /{name[:40]}.{hint} Try /help."


@dataclass(frozen=True)
class Answer:
    """What a command says, and the cancel it made when it was one (a platform may show the
    job's card with it, as the web chat does)."""

    text: str
    cancel: CancelAnswer | None = None
    shown: Shown | None = None
    """``/show``: the job to post again (``chat.surface.repost``)."""


class TextCommands:
    """The commands that are not generations, for one platform's words (its help, its admins)."""

    def __init__(
        self,
        service: ChatService,
        *,
        help_text: Callable[[], str],
        not_admin: str,
        link: Callable[[JobRecord], str | None] | None = None,
    ) -> None:
        self.service = service
        self.help_text = help_text
        """``/help`` as this platform words it (called per ask: it may name the bot's handle)."""
        self.not_admin = not_admin
        """Why ``/admin`` is refused here: who may use it on this platform, and how."""
        self._run: dict[str, Callable[[Context, str], Awaitable[Answer]]] = {
            "jobs": self._jobs,
            "cancel": self._cancel,
            "models": self._models,
            "help": self._help,
            "quota": self._quota,
            "admin": self._admin,
            "history": self._history,
            "show": self._show,
        }
        self.history = History(service)
        self.link = link
        """The platform's link to a posted result, for ``/history`` (Discord's jump links)."""

    def knows(self, name: str) -> bool:
        """Whether ``/name`` is one of these commands."""
        return name in self._run

    async def answer(self, ctx: Context, name: str, rest: str) -> Answer:
        """Run ``/name rest``; an unknown name is refused with the nearest command."""
        run = self._run.get(name)
        if run is None:
            raise InvalidPrompt(unknown_command(name))
        return await run(ctx, rest)

    async def _jobs(self, ctx: Context, rest: str) -> Answer:
        return Answer(await self.service.jobs_text(ctx))

    async def _cancel(self, ctx: Context, rest: str) -> Answer:
        said = await self.service.cancel(ctx, rest.split()[0] if rest.split() else None)
        return Answer(f"{said.job_id}: {said.text}", cancel=said)

    async def _models(self, ctx: Context, rest: str) -> Answer:
        head = f"Models on this deployment ({self.service.catalog.set_name}):"
        return Answer(f"{head}\n{self.service.models_text()}")

    async def _help(self, ctx: Context, rest: str) -> Answer:
        return Answer(self.help_text())

    async def _quota(self, ctx: Context, rest: str) -> Answer:
        who = ctx.requester
        quota = await self.service.quota_text(who)
        return Answer(f"{quota}\nYou are {who.platform}:{who.user_id} here.")

    async def _history(self, ctx: Context, rest: str) -> Answer:
        return Answer(await self.history.text(ctx, link=self.link))

    async def _show(self, ctx: Context, rest: str) -> Answer:
        if not rest.split():
            raise InvalidPrompt("Which job? /show JOB_ID (/history lists your recent ones).")
        shown = await self.history.show(ctx, rest.split()[0])
        return Answer(shown.text, shown=shown)

    def check(self, ctx: Context, name: str) -> None:
        """Refuse ``/name`` to this asker before anything slow runs (a platform may call it
        before its acknowledgement); ``answer`` checks the same."""
        if name == "admin" and not ctx.requester.is_admin:
            raise NotAllowed(self.not_admin)

    async def _admin(self, ctx: Context, rest: str) -> Answer:
        self.check(ctx, "admin")
        words = rest.split()
        if words[:1] == ["cancel"] and len(words) == 2:
            return await self._cancel(ctx, words[1])
        return Answer(await self.service.admin(ctx.requester, rest))
