"""Upload byte budgets per platform: what an encoded result must fit into."""

from __future__ import annotations

import logging

from reelbot.jobs import ReplyAddress
from reelbot.platforms import FALLBACK_BUDGET, PLATFORMS

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BUDGETS", "FALLBACK_BUDGET", "budget_for"]

DEFAULT_BUDGETS: dict[str, tuple[int, int]] = {
    name: (platform.image_bytes, platform.video_bytes) for name, platform in PLATFORMS.items()
}
"""platform: (image bytes, video bytes), from the registry."""


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
