"""The one error handler: pick the reply to an error by its class, walking the MRO."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands

from reelbot.errors import Busy, QuotaExceeded, ReelbotError, TransientError, UserError

log = logging.getLogger(__name__)


def _retry_hint(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f" Try again in {max(1, round(seconds))} s."
    return f" Try again in {round(seconds / 60)} min."


def _user(exc: BaseException) -> str:
    assert isinstance(exc, UserError)
    return exc.user_message


def _budget(exc: BaseException) -> str:
    assert isinstance(exc, QuotaExceeded | Busy)
    return exc.user_message + _retry_hint(exc.retry_after)


def _transient(exc: BaseException) -> str:
    assert isinstance(exc, TransientError)
    return exc.user_message + _retry_hint(exc.retry_after)


_HANDLERS: dict[type[BaseException], Callable[[BaseException], str]] = {
    UserError: _user,
    QuotaExceeded: _budget,
    Busy: _budget,
    TransientError: _transient,
}


def unwrap(exc: BaseException) -> BaseException:
    """The error a command raised, out of discord.py's wrappers."""
    while isinstance(exc, app_commands.CommandInvokeError):
        exc = exc.original
    return exc


def reply_for(exc: BaseException) -> str:
    """Text for the user: ours by class; anything else is a bug, logged with a reference."""
    exc = unwrap(exc)
    for cls in type(exc).__mro__:
        handler = _HANDLERS.get(cls)
        if handler is not None:
            return handler(exc)
    if isinstance(exc, app_commands.TransformerError | app_commands.CheckFailure):
        return f"That option is not valid: {exc}"
    ref = secrets.token_hex(4)
    level = logging.WARNING if isinstance(exc, ReelbotError) else logging.ERROR
    log.log(level, "unhandled error (ref %s)", ref, exc_info=exc)
    return f"Something went wrong (ref {ref}). Please try again."


async def send_error(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    """Answer with the error, ephemeral; after a public defer, replace the placeholder."""
    text = reply_for(exc)
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            # The public "thinking…" placeholder would otherwise stay forever.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("could not delete the placeholder", exc_info=True)
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error: %s", text, exc_info=True)
