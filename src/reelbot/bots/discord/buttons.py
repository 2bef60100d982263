"""Persistent buttons keyed by job id: they are parsed from the custom_id, so they keep working
after the adapter restarts (``discord.ui.DynamicItem``). Chat's ``Button`` values become these."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol, Self

import discord

from reelbot.chat.replies import Button

log = logging.getLogger(__name__)

# custom_id is limited to 100 characters by Discord; ours are "rb:<short>:<job id>".
_JOB = r"(?P<job>[a-z0-9]{1,64})"


class ButtonActions(Protocol):
    """What a click asks of the adapter (``bot.DiscordBot``, hung on the client at start)."""

    async def click(self, interaction: discord.Interaction[Any], action: str, job_id: str) -> None:
        """Run chat's ``action`` (cancel, reroll, vary, animate) on ``job_id``."""
        ...


# The base never matches a custom_id; only its subclasses are registered.
class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)(?P<job>)"):
    """A button that acts on one job."""

    action = ""
    """Chat's name for what it does."""
    short = ""
    """Its part of the custom_id."""
    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=self.style,
                custom_id=f"rb:{self.short}:{job_id}",
            )
        )
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the adapter, which answers errors as it does for commands."""
        actions: ButtonActions | None = getattr(interaction.client, "reelbot_bot", None)
        if actions is None:
            raise RuntimeError("the Discord client has no reelbot bot attached")
        await actions.click(interaction, self.action, self.job_id)

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        """Rebuild the button from its custom_id."""
        return cls(match["job"])


class RerollButton(_JobButton, template=rf"rb:rr:{_JOB}"):
    """Run the same request again with a new seed."""

    action, short, label, emoji = "reroll", "rr", "Re-roll", "🎲"


class VariationsButton(_JobButton, template=rf"rb:var:{_JOB}"):
    """Remix the result image with the same prompt."""

    action, short, label, emoji = "vary", "var", "Variations", "🔀"


class AnimateButton(_JobButton, template=rf"rb:ani:{_JOB}"):
    """Animate the result image."""

    action, short, label, emoji = "animate", "ani", "Animate", "🎬"


class CancelButton(_JobButton, template=rf"rb:cx:{_JOB}"):
    """Cancel a queued or running job."""

    action, short, label, emoji = "cancel", "cx", "Cancel", "✖️"
    style = discord.ButtonStyle.danger


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (
    RerollButton,
    VariationsButton,
    AnimateButton,
    CancelButton,
)
_BY_ACTION = {item.action: item for item in DYNAMIC_ITEMS}
_OURS = re.compile(rf"rb:(?:{'|'.join(item.short for item in DYNAMIC_ITEMS)}):{_JOB}")
UNKNOWN_BUTTON = (
    "This button isn't one reelbot knows (it may be from an older version). Run the command again."
)


async def answer_unknown(interaction: discord.Interaction[Any]) -> None:
    """A button no handler takes (an old message, a forged custom_id) still gets an answer;
    Discord would otherwise show "This interaction failed". discord.py runs a button only
    when its custom_id is on the clicked message; so does this check."""
    if interaction.type != discord.InteractionType.component:
        return
    custom_id = str(dict(interaction.data or {}).get("custom_id", ""))
    rows = interaction.message.components if interaction.message else []
    ids = {getattr(c, "custom_id", None) for row in rows for c in getattr(row, "children", [row])}
    if _OURS.fullmatch(custom_id) and custom_id in ids:
        return
    log.info("unknown button %r", custom_id[:100])
    await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)


def view_of(buttons: tuple[Button, ...]) -> discord.ui.View | None:
    """Chat's buttons as a persistent view; None for no buttons (which clears them)."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(_BY_ACTION[button.action](button.job_id))
    return view
