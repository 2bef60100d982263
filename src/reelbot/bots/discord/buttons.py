"""Persistent buttons keyed by job id: they are parsed from the custom_id, so they keep working
after the adapter restarts (``discord.ui.DynamicItem``). Chat's ``Button`` values become these."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol, Self

import discord

from reelbot.chat.replies import SHORT, Button

log = logging.getLogger(__name__)

# Chat's button actions as Discord draws them: short name in the custom_id, emoji, style.
_GREY = discord.ButtonStyle.secondary
_LOOKS = {  # two a line
    **{"reroll": ("rr", "🎲", _GREY), "animate": ("ani", "🎬", _GREY)},
    **{"vary": ("var", "🔀", _GREY), "vary_subtle": ("vs", "🔀", _GREY)},
    **{"upscale": ("up", "🔍", _GREY), "cancel": ("cx", "✖️", discord.ButtonStyle.danger)},
    **{"vary_strong": ("vx", "🌀", _GREY), "rerun": ("rn", "🔁", _GREY)},
    **{"info": ("in", "ℹ️", _GREY)},
    **{action: (code, None, _GREY) for action, code in SHORT.items()},  # labelled, no emoji
}
_ACTION_OF = {short: action for action, (short, _, _) in _LOOKS.items()}
# custom_id is at most 100 characters: "rb:<short>:<job id>[:<image i of a grid>]".
_TEMPLATE = rf"rb:(?P<short>{'|'.join(_ACTION_OF)}):(?P<job>[a-z0-9]{{1,64}})(?::(?P<i>[0-9]))?"


class ButtonActions(Protocol):
    """What a click asks of the adapter (``bot.DiscordBot``, hung on the client at start)."""

    async def click(self, interaction: discord.Interaction[Any], button: Button) -> None:
        """Run chat's ``button.action`` (cancel, reroll, vary…) on its job (and image)."""


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_TEMPLATE):
    """One of chat's buttons: an action on one job."""

    def __init__(self, button: Button) -> None:
        short, look, style = _LOOKS[button.action]
        custom_id, emoji = f"rb:{short}:{button.job_id}", look if button.index is None else None
        if button.index is not None:  # U1–V4 read by their labels alone
            custom_id += f":{button.index}"
        super().__init__(
            discord.ui.Button(label=button.label, emoji=emoji, style=style, custom_id=custom_id)
        )
        self.button = button

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the adapter, which answers errors as it does for commands."""
        actions: ButtonActions | None = getattr(interaction.client, "reelbot_bot", None)
        if actions is None:
            raise RuntimeError("the Discord client has no reelbot bot attached")
        await actions.click(interaction, self.button)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], m: re.Match[str], /
    ) -> Self:
        """Rebuild the button from its custom_id (and the clicked component's label)."""
        label = getattr(item, "label", None) or ""
        index = int(m["i"]) if m["i"] else None
        return cls(Button(_ACTION_OF[m["short"]], m["job"], label, index))


_OURS = re.compile(_TEMPLATE)
UNKNOWN_BUTTON = (
    "This button isn't one reelbot knows (it may be from an older version). Run the command again."
)


async def answer_unknown(interaction: discord.Interaction[Any]) -> None:
    """A button no handler takes (an old message, a forged custom_id) still gets an answer, not
    "This interaction failed"; like discord.py, only a custom_id on the clicked message is run."""
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
    view = discord.ui.View(timeout=None)
    for item in map(JobButton, buttons):
        view.add_item(item)
    return view if buttons else None
