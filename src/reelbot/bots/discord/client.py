"""The discord.py client: app commands only, no privileged intents, persistent buttons."""

from __future__ import annotations

import logging
from typing import Any

import discord

from reelbot.bots.discord.bot import DiscordBot
from reelbot.bots.discord.buttons import DYNAMIC_ITEMS, is_ours
from reelbot.bots.discord.commands import Tree, build_tree

log = logging.getLogger(__name__)

UNKNOWN_BUTTON = (
    "This button isn't one reelbot knows (it may be from an older version). Run the command again."
)


class ReelbotClient(discord.Client):
    """A gateway client that dispatches commands and buttons to the adapter's handlers."""

    def __init__(self, *, guild_id: int | None = None) -> None:
        # Slash commands and buttons arrive as interactions, which need no intents at all.
        # Without the guilds intent no GUILD_CREATE follows READY, so discord.py's wait for them
        # (2 s by default) only delays start-up.
        # Prompts are echoed in status messages and captions: "@everyone" or a role mention in
        # one must never ping. Every send and edit defaults to no mentions; the one post that
        # must notify its requester names that user explicitly.
        super().__init__(
            intents=discord.Intents.none(),
            guild_ready_timeout=0.1,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.tree: Tree = build_tree(self)
        self.guild_id = guild_id
        self.reelbot_bot: DiscordBot | None = None

    async def setup_hook(self) -> None:
        """Register the persistent buttons (the commands are synced after READY, by the app)."""
        self.add_dynamic_items(*DYNAMIC_ITEMS)

    async def on_interaction(self, interaction: discord.Interaction[discord.Client]) -> None:
        """A button no handler takes (an old message, a forged custom_id) still gets an answer;
        Discord would otherwise show "This interaction failed". discord.py runs a button only
        when its custom_id is on the clicked message; so does this check."""
        if interaction.type != discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if is_ours(custom_id) and _on_message(interaction.message, custom_id):
            return
        log.info("unknown button %r", custom_id[:100])
        await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)


def _on_message(message: discord.Message | None, custom_id: str) -> bool:
    if message is None:
        return False
    for row in message.components:
        for child in getattr(row, "children", [row]):
            if getattr(child, "custom_id", None) == custom_id:
                return True
    return False
