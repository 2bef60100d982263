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


def _markup_key(markup: InlineKeyboardMarkup | None) -> str:
    return json.dumps(markup.to_dict(), sort_keys=True) if markup is not None else ""


def is_group(chat_id: int) -> bool:
    """Group and channel ids are negative; private chats have the user's (positive) id."""
    return chat_id < 0


class StatusBoard:
    """Job states in status messages: throttled per chat, latest state wins, no no-op edits."""

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
        self._shown: OrderedDict[Key, tuple[str, str]] = OrderedDict()
        self._final: OrderedDict[Key, None] = OrderedDict()
        self._last_edit: dict[int, float] = {}
        self._pending: dict[Key, tuple[str, InlineKeyboardMarkup | None]] = {}
        self._timers: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    def interval(self, chat_id: int) -> float:
        """Seconds between progress edits in this chat."""
        return self._group if is_group(chat_id) else self._private

    def remember(
        self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> None:
        """Record what a freshly sent status message shows."""
        self._set_shown((chat_id, message_id), text, markup)
        self._last_edit[chat_id] = self._clock()

    def _set_shown(self, key: Key, text: str, markup: InlineKeyboardMarkup | None) -> None:
        self._shown[key] = (text, _markup_key(markup))
        self._shown.move_to_end(key)
        while len(self._shown) > _REMEMBER:
            self._shown.popitem(last=False)

    async def show(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        final: bool = False,
    ) -> None:
        """Show ``text`` now or at the chat's next edit slot; after a ``final`` state, nothing."""
        key = (chat_id, message_id)
        if key in self._final:
            return  # a late progress event after the result: the message already says done
        if final:
            self._final[key] = None
            while len(self._final) > _REMEMBER:
                self._final.popitem(last=False)
        wait = self._wait(chat_id)
        if wait <= 0 and not any(k[0] == chat_id for k in self._pending):
            await self._edit(key, text, markup)
            return
        # Only the latest state of a message matters: it replaces one still waiting.
        self._pending[key] = (text, markup)
        timer = self._timers.get(chat_id)
        if timer is None or timer.done():
            self._timers[chat_id] = asyncio.create_task(self._flush(chat_id))

    def _wait(self, chat_id: int) -> float:
        last = self._last_edit.get(chat_id, float("-inf"))
        return last + self.interval(chat_id) - self._clock()

    async def _flush(self, chat_id: int) -> None:
        """Send the chat's waiting states, one per edit slot, until none is left."""
        while True:
            keys = [k for k in self._pending if k[0] == chat_id]
            if not keys:
                return
            wait = self._wait(chat_id)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            item = self._pending.pop(keys[0], None)
            if item is not None:
                await self._edit(keys[0], *item)

    async def _edit(self, key: Key, text: str, markup: InlineKeyboardMarkup | None) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
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
                    log.info("status edit in chat %s skipped: %s", chat_id, exc.message)
            except TelegramError as exc:
                # Progress is best effort; the result itself goes out through its own path.
                log.warning("status edit in chat %s failed: %s", chat_id, exc)
                return
            self._set_shown(key, text, markup)
        if len(self._locks) > _REMEMBER:
            self._locks = {k: v for k, v in self._locks.items() if v.locked() or k == key}

    async def close(self) -> None:
        """Stop the timers; final states still waiting for a slot are sent now."""
        for task in self._timers.values():
            task.cancel()
        for task in self._timers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._timers.clear()
        pending, self._pending = self._pending, {}
        for key, (text, markup) in pending.items():
            if key in self._final:
                with contextlib.suppress(TelegramError):
                    await self._edit(key, text, markup)
