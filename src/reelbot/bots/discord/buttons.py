"""Persistent buttons keyed by job id: they are parsed from the custom_id, so they keep working
after the adapter restarts (``discord.ui.DynamicItem``). Chat's ``Button`` values become these."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol, Self

import discord

from reelbot.chat.replies import Button

log = logging.getLogger(__name__)

# Chat's button actions as Discord draws them: the short name in the custom_id, emoji, style.
# The label is chat's (``Button.label``).
_LOOKS = {
    "reroll": ("rr", "🎲", discord.ButtonStyle.secondary),
    "vary": ("var", "🔀", discord.ButtonStyle.secondary),
    "animate": ("ani", "🎬", discord.ButtonStyle.secondary),
    "cancel": ("cx", "✖️", discord.ButtonStyle.danger),
}
_ACTION_OF = {short: action for action, (short, _, _) in _LOOKS.items()}
# custom_id is limited to 100 characters by Discord; ours are "rb:<short>:<job id>".
_TEMPLATE = rf"rb:(?P<short>{'|'.join(_ACTION_OF)}):(?P<job>[a-z0-9]{{1,64}})"


class ButtonActions(Protocol):
    """What a click asks of the adapter (``bot.DiscordBot``, hung on the client at start)."""

    async def click(self, interaction: discord.Interaction[Any], action: str, job_id: str) -> None:
        """Run chat's ``action`` (cancel, reroll, vary, animate) on ``job_id``."""
        ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_TEMPLATE):
    """One of chat's buttons: an action on one job."""

    def __init__(self, button: Button) -> None:
        short, emoji, style = _LOOKS[button.action]
        custom_id = f"rb:{short}:{button.job_id}"
        super().__init__(
            discord.ui.Button(label=button.label, emoji=emoji, style=style, custom_id=custom_id)
        )
        self.button = button

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the adapter, which answers errors as it does for commands."""
        actions: ButtonActions | None = getattr(interaction.client, "reelbot_bot", None)
        if actions is None:
            raise RuntimeError("the Discord client has no reelbot bot attached")
        await actions.click(interaction, self.button.action, self.button.job_id)

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        """Rebuild the button from its custom_id (and the clicked component's label)."""
        label = getattr(item, "label", None) or ""
        return cls(Button(_ACTION_OF[match["short"]], match["job"], label))


_OURS = re.compile(_TEMPLATE)
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
        view.add_item(JobButton(button))
    return view
