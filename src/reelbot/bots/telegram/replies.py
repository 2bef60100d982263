"""The adapter's one error handler: the reply is picked by the error's class."""

from __future__ import annotations

import logging
import secrets

from telegram import Update
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import ContextTypes

from reelbot.errors import ReelbotError, TransientError, UserError

log = logging.getLogger(__name__)

ALERT_LIMIT = 200
"""answerCallbackQuery shows at most 200 characters."""
REPLY_TIMEOUT_S = 15.0


def reply_text_for(exc: BaseException | None, *, where: str = "") -> str | None:
    """What to tell the user about ``exc``; None when no reply should be tried.

    User and transient errors are written for users and shown as they are; anything else is a
    bug, logged with a reference the user can quote.
    """
    if isinstance(exc, (RetryAfter, NetworkError)) and not isinstance(exc, BadRequest):
        # Telegram itself is unreachable or throttling: a reply would fail the same way.
        log.warning("Telegram call failed%s: %s", where, exc)
        return None
    if isinstance(exc, (UserError, TransientError)):
        return exc.user_message
    ref = secrets.token_hex(3)
    detail = exc.code if isinstance(exc, ReelbotError) else type(exc).__name__
    log.error("unhandled error (ref %s, %s)%s", ref, detail, where, exc_info=exc)
    return f"Something went wrong (ref {ref})."


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """PTB error handler: answer the button press or reply to the message that failed."""
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" in update {update.update_id}" + (f", chat {chat.id}" if chat else "")
    text = reply_text_for(context.error, where=where)
    if text is None or not isinstance(update, Update):
        return
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text[:ALERT_LIMIT], show_alert=True)
        elif update.effective_message is not None:
            await update.effective_message.reply_text(
                text, do_quote=True, read_timeout=REPLY_TIMEOUT_S, write_timeout=REPLY_TIMEOUT_S
            )
    except TelegramError as reply_exc:
        log.warning("could not send the error reply%s: %s", where, reply_exc)
