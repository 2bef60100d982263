"""What a command answers, as values each platform renders, and the one error-to-reply table.

The table is looked up by the error's class, walking the MRO (starlette's
``_lookup_exception_handler``): the most specific entry wins, so ``QuotaExceeded`` gets its retry
hint while any other ``UserError`` shows its own message. Anything that is not ours is a bug:
it is logged with a reference the user can quote.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from reelbot.errors import (
    BackendUnavailable,
    Busy,
    QuotaExceeded,
    ReelbotError,
    TransientError,
    UserError,
)

log = logging.getLogger(__name__)

__all__ = ["Button", "Reply", "reply_for", "retry_hint"]


@dataclass(frozen=True)
class Button:
    """One button under a message: what it does (``action``) to which job, and its label.

    ``index`` is the 0-based image of a grid the action takes (U2: upscale image 1); None means
    the whole result.
    """

    action: str
    job_id: str
    label: str
    index: int | None = None


SHORT = {"extend": "ex", "smooth": "sm", "zoom_2": "zo", "zoom_15": "zh", "imagine": "im"}
SHORT |= {"pan_left": "pl", "pan_right": "pr", "pan_up": "pu", "pan_down": "pd"}
SHORT |= {"edit": "ed"}  # Edit region: a link to the web editor, or its mask
"""Two-letter codes of the video, zoom, pan and /describe buttons in a platform's button data
(the older actions keep the codes each platform gave them)."""


@dataclass(frozen=True)
class Reply:
    """An answer to a command: text, maybe buttons, private (ephemeral) unless said otherwise."""

    text: str
    private: bool = True
    buttons: tuple[Button, ...] = field(default=())


def retry_hint(seconds: float | None) -> str:
    """`` Try again in 5 s.`` from a retry-after, or nothing when it is unknown."""
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
    return exc.user_message + retry_hint(exc.retry_after)


def _transient(exc: BaseException) -> str:
    assert isinstance(exc, TransientError)
    return exc.user_message + retry_hint(exc.retry_after)


def _redis(exc: BaseException) -> str:
    # A Redis error that escaped the service's wrapper reads as the wrapped one would.
    return BackendUnavailable().user_message


HANDLERS: dict[type[BaseException], Callable[[BaseException], str]] = {
    UserError: _user,
    QuotaExceeded: _budget,
    Busy: _budget,
    TransientError: _transient,
    RedisError: _redis,
    ConnectionError: _redis,
}
"""Error class → the words for the user; platforms may add their own entries in front."""


def lookup(
    exc: BaseException,
    handlers: dict[type[BaseException], Callable[[BaseException], str]] = HANDLERS,
) -> Callable[[BaseException], str] | None:
    """The handler for ``exc``'s class or its nearest base, or None."""
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def reply_for(exc: BaseException, *, where: str = "") -> str:
    """Text for the user: ours by class; anything else is a bug, logged with a reference."""
    handler = lookup(exc)
    if handler is not None:
        return handler(exc)
    ref = secrets.token_hex(4)
    level = logging.WARNING if isinstance(exc, ReelbotError) else logging.ERROR
    log.log(level, "unhandled error (ref %s)%s", ref, where, exc_info=exc)
    return f"Something went wrong (ref {ref}). Please try again."
