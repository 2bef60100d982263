"""The adapter's one error handler: the words come from ``reelbot.chat.replies``."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import ContextTypes

from reelbot.chat.replies import reply_for

from .handlers import ALERT_LIMIT
from .surface import REPLY_TIMEOUT_S

log = logging.getLogger(__name__)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """PTB error handler: answer the button press or reply to the message that failed."""
    exc = context.error
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" in update {update.update_id}" + (f", chat {chat.id}" if chat else "")
    if isinstance(exc, RetryAfter | NetworkError) and not isinstance(exc, BadRequest):
        # Telegram itself is unreachable or throttling: a reply would fail the same way.
        log.warning("Telegram call failed%s: %s", where, exc)
        return
    if exc is None:
        return
    text = reply_for(exc, where=where)  # logs anything that is not ours, with a reference
    if not isinstance(update, Update):
        return
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text[:ALERT_LIMIT], show_alert=True)
        elif update.effective_message is not None:
            await update.effective_message.reply_text(
                text, do_quote=True, read_timeout=REPLY_TIMEOUT_S, write_timeout=REPLY_TIMEOUT_S
            )
    except Exception as reply_exc:
        # The handler of last resort must not raise: PTB would only log it again.
        log.warning("could not send the error reply%s: %s", where, reply_exc)
