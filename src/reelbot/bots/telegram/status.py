"""Status messages, edited within Telegram's per-chat rate and never to what they already show."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest, TelegramError

log = logging.getLogger(__name__)

PRIVATE_INTERVAL_S = 1.0
GROUP_INTERVAL_S = 3.0
"""Telegram allows about one message a second per chat and 20 a minute per group; progress
edits stay well inside that so results and other replies are never held back."""
EDIT_TIMEOUT_S = 15.0
_REMEMBER = 2048

Key = tuple[int, int]
Pending = tuple[str, InlineKeyboardMarkup | None, str]
"""Text, buttons and the job it is about (for the log)."""


def _markup_key(markup: InlineKeyboardMarkup | None) -> str:
    return json.dumps(markup.to_dict(), sort_keys=True) if markup is not None else ""


def _bounded(d: OrderedDict[Key, object], key: Key, value: object) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > _REMEMBER:
        d.popitem(last=False)


class StatusBoard:
    """Job states in status messages: throttled per chat, latest state wins, no no-op edits.

    Edits share the chat's slots (group and channel ids are negative and get the slower rate);
    a final state is never overwritten by a late progress event.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        private_interval: float = PRIVATE_INTERVAL_S,
        group_interval: float = GROUP_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self._private = private_interval
        self._group = group_interval
        self._clock = clock
        self._shown: OrderedDict[Key, object] = OrderedDict()
        self._final: OrderedDict[Key, object] = OrderedDict()
        self._last_edit: dict[int, float] = {}
        self._pending: dict[Key, Pending] = {}
        self._timers: dict[int, asyncio.Task[None]] = {}

    def interval(self, chat_id: int) -> float:
        """Seconds between edits in this chat."""
        return self._group if chat_id < 0 else self._private

    def remember(
        self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> None:
        """Record what a freshly sent status message shows."""
        _bounded(self._shown, (chat_id, message_id), (text, _markup_key(markup)))
        self._last_edit[chat_id] = self._clock()

    async def show(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        final: bool = False,
        job_id: str = "",
    ) -> None:
        """Show ``text`` now or at the chat's next edit slot; after a ``final`` state, nothing."""
        key = (chat_id, message_id)
        if key in self._final:
            return  # a late progress event after the result: the message already says done
        if final:
            _bounded(self._final, key, None)
        if self._wait(chat_id) <= 0 and not any(k[0] == chat_id for k in self._pending):
            await self._edit(key, (text, markup, job_id))
            return
        # Only the latest state of a message matters: it replaces one still waiting.
        self._pending[key] = (text, markup, job_id)
        timer = self._timers.get(chat_id)
        if timer is None or timer.done():
            self._timers[chat_id] = asyncio.create_task(self._flush(chat_id))

    def _wait(self, chat_id: int) -> float:
        last = self._last_edit.get(chat_id, float("-inf"))
        return last + self.interval(chat_id) - self._clock()

    async def _flush(self, chat_id: int) -> None:
        """Send the chat's waiting states, one per edit slot, until none is left."""
        while keys := [k for k in self._pending if k[0] == chat_id]:
            wait = self._wait(chat_id)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            item = self._pending.pop(keys[0], None)
            if item is None:
                continue
            try:
                await self._edit(keys[0], item)
            except Exception:
                # Never "Task exception was never retrieved": say which job, keep going.
                log.warning("status edit of job %s failed", item[2], exc_info=True)

    async def _edit(self, key: Key, item: Pending) -> None:
        text, markup, job_id = item
        if self._shown.get(key) == (text, _markup_key(markup)):
            return
        chat_id, message_id = key
        self._last_edit[chat_id] = self._clock()
        try:
            await self._bot.edit_message_text(
                text,
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=markup,
                read_timeout=EDIT_TIMEOUT_S,
                write_timeout=EDIT_TIMEOUT_S,
            )
        except BadRequest as exc:
            # After a restart the board does not know what is shown; "not modified" then
            # just means the message is already right. A deleted message cannot be edited.
            if "not modified" not in exc.message.lower():
                log.info("status edit of job %s skipped: %s", job_id, exc.message)
        except TelegramError as exc:
            # Progress is best effort; the result itself goes out through its own path.
            log.warning("status edit of job %s failed: %s", job_id, exc)
            return
        _bounded(self._shown, key, (text, _markup_key(markup)))

    async def close(self) -> None:
        """Stop the timers; final states still waiting for a slot are sent now."""
        for task in self._timers.values():
            task.cancel()
        for task in self._timers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._timers.clear()
        pending, self._pending = self._pending, {}
        for key, item in pending.items():
            if key in self._final:
                with contextlib.suppress(Exception):
                    await self._edit(key, item)
