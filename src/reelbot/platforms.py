"""``PLATFORMS``: every chat platform reelbot speaks, one line each.

What ``reelbot <platform>``, ``reelbot up``, the upload budgets and the import contracts read;
no platform name is written anywhere else outside its own folder in ``bots/``. Adding a
platform is one folder and one line here (see the README's "Adding a platform").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FALLBACK_BUDGET", "MIB", "PLATFORMS", "Platform"]

MIB = 1024 * 1024
FALLBACK_BUDGET = 8 * MIB
"""Upload bytes for a platform not listed: the strictest common chat limit."""


@dataclass(frozen=True)
class Platform:
    """One platform: how to run it, which setting turns it on, and what an upload may weigh."""

    command: str
    """``"module:function"`` run by ``reelbot <name>``, called with the settings (a coroutine
    function is run to completion)."""
    up: str
    """``"module:function"``: ``async def run_up(settings, stop)`` for ``reelbot up``."""
    switch: str | None
    """The settings field that turns it on under ``reelbot up`` (a token); None: always on."""
    image_bytes: int
    video_bytes: int
    settings_prefix: str
    """Its section of the settings: the fields (and ``REELBOT_`` variables) with this prefix."""


PLATFORMS: dict[str, Platform] = {
    # 10 MiB per attachment for bots since 2025; an interaction's own attachment_size_limit
    # (boosted servers) arrives as the reply address's extra["max_bytes"].
    "discord": Platform(
        command="reelbot.bots.discord.service:run_discord",
        up="reelbot.bots.discord.service:run_up",
        switch="discord_token",
        image_bytes=10 * MIB,
        video_bytes=10 * MIB,
        settings_prefix="discord_",
    ),
    # Bot API: photos up to 10 MB, videos and documents up to 50 MB (decimal, to be safe); a
    # local Bot API server allows more and sets extra["max_bytes"].
    "telegram": Platform(
        command="reelbot.bots.telegram.service:run_telegram",
        up="reelbot.bots.telegram.service:run_up",
        switch="telegram_token",
        image_bytes=10_000_000,
        video_bytes=50_000_000,
        settings_prefix="telegram_",
    ),
    "web": Platform(
        command="reelbot.bots.web.service:run_web",
        up="reelbot.bots.web.service:run_up",
        switch=None,
        image_bytes=50_000_000,
        video_bytes=50_000_000,
        settings_prefix="web_",
    ),
}
