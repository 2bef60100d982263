"""Upload byte budgets per platform: what an encoded result must fit into."""

from __future__ import annotations

import logging

from reelbot.jobs import ReplyAddress

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BUDGETS", "FALLBACK_BUDGET", "budget_for"]

MIB = 1024 * 1024

DEFAULT_BUDGETS: dict[str, tuple[int, int]] = {
    # platform: (image bytes, video bytes)
    # Discord: 10 MiB per attachment for bots since 2025; an interaction's own
    # attachment_size_limit (boosted servers) arrives as extra["max_bytes"].
    "discord": (10 * MIB, 10 * MIB),
    # Telegram Bot API: photos up to 10 MB, videos and documents up to 50 MB (decimal, to be
    # safe); a local Bot API server allows more and sets extra["max_bytes"].
    "telegram": (10_000_000, 50_000_000),
    "web": (50_000_000, 50_000_000),
}
FALLBACK_BUDGET = 8 * MIB
"""For a platform not listed: the strictest common chat limit."""


def budget_for(reply: ReplyAddress, *, video: bool) -> int:
    """The byte budget of a result: the address's ``extra["max_bytes"]``, else the default."""
    override = reply.extra.get("max_bytes")
    if override is not None:
        try:
            value = int(override)
        except ValueError:
            value = 0
        if value > 0:
            return value
        log.warning("ignoring max_bytes=%r on a %s reply address", override, reply.platform)
    image, clip = DEFAULT_BUDGETS.get(reply.platform, (FALLBACK_BUDGET, FALLBACK_BUDGET))
    return clip if video else image
