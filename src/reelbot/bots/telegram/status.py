"""Status messages, edited within Telegram's per-chat rate and never to what they already show."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto
from telegram.error import BadRequest, TelegramError

from reelbot.chat.throttle import EditThrottle

log = logging.getLogger(__name__)

PRIVATE_INTERVAL_S = 1.0
GROUP_INTERVAL_S = 3.0
"""Telegram allows about one message a second per chat and 20 a minute per group; progress
edits stay well inside that so results and other replies are never held back."""
EDIT_TIMEOUT_S = 15.0
TIMEOUTS: dict[str, Any] = {"read_timeout": EDIT_TIMEOUT_S, "write_timeout": EDIT_TIMEOUT_S}
_REMEMBER = 2048
Markup = InlineKeyboardMarkup | None


def _failed(what: str, job_id: str, exc: Exception) -> None:
    """Progress is best effort (the result goes out through its own path); never "Task exception
    was never retrieved": say which job, with a trace if it is not Telegram."""
    trace = not isinstance(exc, TelegramError)
    log.warning("%s of job %s failed: %s", what, job_id, exc, exc_info=trace)


class StatusBoard:
    """Job states in status messages: paced per chat (``EditThrottle`` with the chat as room;
    group and channel ids are negative and get the slower rate), latest state wins, a final
    state is never overwritten, and an edit to what the message shows is not sent."""

    def __init__(
        self,
        bot: Bot,
        *,
        private_interval: float = PRIVATE_INTERVAL_S,
        group_interval: float = GROUP_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self.throttle = EditThrottle(
            clock=clock,
            interval_for=lambda chat: group_interval if chat.startswith("-") else private_interval,
        )
        self._shown: OrderedDict[tuple[int, int], tuple[str, Markup]] = OrderedDict()
        self.previews: dict[str, int] = {}
        """Each running job's preview photo: sent once, its media edited, deleted at the end."""

    def _note(self, chat_id: int, message_id: int, text: str, markup: Markup) -> None:
        self._shown[chat_id, message_id] = (text, markup)  # PTB objects compare by content
        self._shown.move_to_end((chat_id, message_id))
        while len(self._shown) > _REMEMBER:
            self._shown.popitem(last=False)

    def remember(self, chat_id: int, message_id: int, text: str, markup: Markup) -> None:
        """Record what a freshly sent status message shows (sending it used the chat's slot)."""
        self._note(chat_id, message_id, text, markup)
        self.throttle.touch(str(chat_id))

    async def show(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        markup: Markup = None,
        *,
        final: bool = False,
        job_id: str = "",
    ) -> None:
        """Show ``text`` now or at the chat's next edit slot; after a ``final`` state, nothing."""
        edit = partial(self._edit, chat_id, message_id, text, markup, job_id)
        await self.throttle.run(f"{chat_id}:{message_id}", edit, room=str(chat_id), final=final)

    async def photo(self, chat_id: int, job_id: str, jpeg: bytes | None, where: Any) -> None:
        """A step preview in a photo of its own (a text message takes no editMessageMedia): sent
        once (``where``: sendPhoto's chat and reply), its media edited in the chat's slots; None
        (the job ended) deletes it."""

        async def edit() -> bool:
            shown = self.previews.pop(job_id, None) if jpeg is None else self.previews.get(job_id)
            try:
                if jpeg is None:  # False when there is none: the slot stays free
                    return shown is not None and await self._bot.delete_message(chat_id, shown)
                if shown is None:
                    sent = await self._bot.send_photo(photo=jpeg, **where)
                    self.previews[job_id] = sent.message_id
                else:  # the same key below: a waiting edit is replaced, also by the deletion
                    await self._bot.edit_message_media(InputMediaPhoto(jpeg), chat_id, shown)
            except Exception as exc:  # best effort, like the status edits below
                _failed("preview", job_id, exc)
            return True

        await self.throttle.run(f"{chat_id}:{job_id}:p", edit, room=str(chat_id), final=not jpeg)

    async def _edit(
        self, chat_id: int, message_id: int, text: str, markup: Markup, job_id: str
    ) -> bool:
        """Edit the message; False when it already shows this (no call, the slot stays free)."""
        if self._shown.get((chat_id, message_id)) == (text, markup):
            return False
        try:
            await self._bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, reply_markup=markup, **TIMEOUTS
            )
        except BadRequest as exc:
            # After a restart the board does not know what is shown; "not modified" then
            # just means the message is already right. A deleted message cannot be edited.
            if "not modified" not in exc.message.lower():
                log.info("status edit of job %s skipped: %s", job_id, exc.message)
        except Exception as exc:
            _failed("status edit", job_id, exc)
            return True
        self._note(chat_id, message_id, text, markup)
        return True

    async def close(self) -> None:
        """Stop the timers; final states still waiting for a slot are sent now."""
        await self.throttle.aclose()
