"""The PTB ``Application`` for reelbot: built against any Bot API root, started and stopped."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import BotCommand, Update
from telegram.error import BadRequest, Conflict, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from reelbot.chat.replies import reply_for
from reelbot.chat.texts import MENU, clip
from reelbot.runtime.supervise import Backoff, BestEffort

from .handlers import ALERT_LIMIT
from .surface import REPLY_TIMEOUT_S
from .webhook import WebhookConfig, WebhookServer

log = logging.getLogger(__name__)

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]

DEFAULT_API_ROOT = "https://api.telegram.org"
POLL_TIMEOUT_S = 10
"""getUpdates long-poll timeout: Telegram holds the request up to this long when idle."""
CALL_TIMEOUT_S = 20.0
RATE_LIMIT_RETRIES = 5
"""How many 429s in a row one call waits out (each for its ``retry_after``) before failing."""
CONCURRENT_UPDATES = 16
"""Updates handled at once, so one user's image download does not hold up everyone else."""
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
STARTUP_RETRY = Backoff(first_s=2.0, max_s=300.0)
"""Between tries of a start-up call the bot can run without (the command menu)."""
STARTUP_ATTEMPTS = 12
"""Tries of such a call before it is given up (about 25 minutes of 5xx answers)."""
BOOTSTRAP_RETRIES = 5
"""Retries of the webhook clean-up before polling (PTB waits a growing 1-5 s between them)."""

CONFLICT_HELP = (
    "Telegram answered 409 Conflict: another process is polling getUpdates with this bot "
    "token. Only one poller per token works; stop the other `reelbot telegram`, or use "
    "webhook mode."
)


def bot_api_urls(api_root: str) -> tuple[str, str]:
    """``(base_url, base_file_url)`` for PTB from a Bot API server root."""
    root = api_root.rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


class TelegramAdapter:
    """A PTB application that polls getUpdates (or takes a webhook) for one bot token."""

    def __init__(
        self, *, token: str, api_root: str = DEFAULT_API_ROOT, poll_timeout: int = POLL_TIMEOUT_S
    ) -> None:
        # PTB 22 warns on every RetryAfter (even inside its own rate limiter) until a program
        # opts in to timedelta durations; reelbot never reads the int form, so it opts in.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        base_url, base_file_url = bot_api_urls(api_root)
        self.application: Application = (  # type: ignore[type-arg]
            ApplicationBuilder()
            .token(token)
            .base_url(base_url)
            .base_file_url(base_file_url)
            .rate_limiter(AIORateLimiter(max_retries=RATE_LIMIT_RETRIES))
            .concurrent_updates(CONCURRENT_UPDATES)
            .connect_timeout(CALL_TIMEOUT_S)
            .read_timeout(CALL_TIMEOUT_S)
            .write_timeout(CALL_TIMEOUT_S)
            .pool_timeout(CALL_TIMEOUT_S)
            .get_updates_read_timeout(poll_timeout + CALL_TIMEOUT_S)
            .build()
        )
        self.bot = self.application.bot
        self.poll_timeout = poll_timeout
        self.conflicts = 0
        self.webhook: WebhookServer | None = None
        self.extras = BestEffort(
            retry_if=_worth_retrying, backoff=STARTUP_RETRY, attempts=STARTUP_ATTEMPTS
        )

    def route(self, on_message: Handler, on_button: Handler) -> None:
        """Commands in texts and captions (``CommandHandler`` skips those), album parts, buttons."""
        app = self.application
        albums = filters.PHOTO | filters.VIDEO | filters.Document.ALL | filters.CaptionRegex("^/")
        app.add_handler(MessageHandler(filters.COMMAND | albums, on_message))
        app.add_handler(CallbackQueryHandler(on_button))
        app.add_error_handler(on_error)

    async def start(self, webhook: WebhookConfig | None = None) -> None:
        """Connect (getMe), register the command menu, then poll or register the webhook.

        The menu is a convenience: when Telegram fails it (5xx, 429s), the bot starts without it
        and the call is retried in the background.
        """
        await self.application.initialize()
        bot = self.application.bot
        menu = [BotCommand(name, text) for name, text in MENU]
        await self.extras.call("setMyCommands", lambda: bot.set_my_commands(menu))
        await self.application.start()
        if webhook is None:
            assert self.application.updater is not None
            await self.application.updater.start_polling(
                timeout=self.poll_timeout,
                allowed_updates=ALLOWED_UPDATES,
                error_callback=self._polling_error,
                bootstrap_retries=BOOTSTRAP_RETRIES,
            )
        else:
            self.webhook = WebhookServer(self.application, webhook)
            await self.webhook.start()
            await bot.set_webhook(
                webhook.url, secret_token=webhook.secret, allowed_updates=ALLOWED_UPDATES
            )
        log.info("telegram: @%s is up (%s)", bot.username, "webhook" if webhook else "polling")

    def _polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, Conflict):
            self.conflicts += 1
            if self.conflicts == 1:
                log.error(CONFLICT_HELP)
            return
        log.warning("telegram: getUpdates failed, retrying: %s", exc)

    async def stop(self) -> None:
        """Stop polling and handlers, then close the HTTP client."""
        await self.extras.aclose()
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()


def _worth_retrying(exc: Exception) -> bool:
    """A 5xx, a timeout or a 429 that outlasted the rate limiter; not a 400 or a bad token."""
    if isinstance(exc, BadRequest):  # PTB's BadRequest is a NetworkError; a retry won't help
        return False
    return isinstance(exc, NetworkError | RetryAfter)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """PTB error handler: answer the button press or reply to the message that failed."""
    exc = context.error
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" in update {update.update_id}" + (f", chat {chat.id}" if chat else "")
    if exc is None:
        return
    if _worth_retrying(exc):
        # Telegram itself is unreachable or throttling: a reply would fail the same way.
        log.warning("Telegram call failed%s: %s", where, exc)
        return
    text = clip(reply_for(exc, where=where), 2000)  # logs a bug; fits 4096 UTF-16 units
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
