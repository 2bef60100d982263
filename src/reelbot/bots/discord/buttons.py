"""Persistent buttons keyed by job id: they are parsed from the custom_id, so they keep working
after the adapter restarts (``discord.ui.DynamicItem``)."""

from __future__ import annotations

import re
from typing import Any, Protocol, Self

import discord

from reelbot.bots.discord.replies import send_error
from reelbot.catalog import Task

# custom_id is limited to 100 characters by Discord; ours are "rb:<action>:<job id>".
_JOB = r"(?P<job>[a-z0-9]{1,64})"


class ButtonActions(Protocol):
    """What the buttons ask of the adapter's logic (``intake.Intake``, hung on the client).

    A protocol rather than an import: the intake imports this module for its views.
    """

    async def reroll(self, interaction: discord.Interaction[Any], job_id: str) -> None: ...

    async def from_result(
        self, interaction: discord.Interaction[Any], job_id: str, task: Task
    ) -> None: ...

    async def cancel_button(self, interaction: discord.Interaction[Any], job_id: str) -> None: ...


def _actions_of(interaction: discord.Interaction[Any]) -> ButtonActions:
    """The adapter's logic, hung on the client at start."""
    intake: ButtonActions | None = getattr(interaction.client, "reelbot_intake", None)
    if intake is None:
        raise RuntimeError("the Discord client has no reelbot intake attached")
    return intake


# The base never matches a custom_id; only its subclasses are registered.
class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)(?P<job>)"):
    """A button that acts on one job."""

    action = ""
    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=self.style,
                custom_id=f"rb:{self.action}:{job_id}",
            )
        )
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Run the action; errors get the adapter's one error reply, as commands do."""
        try:
            await self.act(_actions_of(interaction), interaction)
        except Exception as exc:
            await send_error(interaction, exc)

    async def act(self, intake: ButtonActions, interaction: discord.Interaction[Any]) -> None:
        """What the button does."""
        raise NotImplementedError

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

    action, label, emoji = "rr", "Re-roll", "🎲"

    async def act(self, intake: ButtonActions, interaction: discord.Interaction[Any]) -> None:
        """Start the re-roll."""
        await intake.reroll(interaction, self.job_id)


class VariationsButton(_JobButton, template=rf"rb:var:{_JOB}"):
    """Remix the result image with the same prompt."""

    action, label, emoji = "var", "Variations", "🔀"

    async def act(self, intake: ButtonActions, interaction: discord.Interaction[Any]) -> None:
        """Start a remix of the image on this message."""
        await intake.from_result(interaction, self.job_id, Task.REMIX)


class AnimateButton(_JobButton, template=rf"rb:ani:{_JOB}"):
    """Animate the result image."""

    action, label, emoji = "ani", "Animate", "🎬"

    async def act(self, intake: ButtonActions, interaction: discord.Interaction[Any]) -> None:
        """Start an animation of the image on this message."""
        await intake.from_result(interaction, self.job_id, Task.ANIMATE)


class CancelButton(_JobButton, template=rf"rb:cx:{_JOB}"):
    """Cancel a queued or running job."""

    action, label, emoji = "cx", "Cancel", "✖️"
    style = discord.ButtonStyle.danger

    async def act(self, intake: ButtonActions, interaction: discord.Interaction[Any]) -> None:
        """Cancel the job."""
        await intake.cancel_button(interaction, self.job_id)


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (
    RerollButton,
    VariationsButton,
    AnimateButton,
    CancelButton,
)


_OURS = re.compile(rf"rb:(?:{'|'.join(item.action for item in DYNAMIC_ITEMS)}):{_JOB}")


def is_ours(custom_id: str) -> bool:
    """Whether one of the buttons above handles this custom_id (as discord.py matches them)."""
    return _OURS.fullmatch(custom_id) is not None


def status_view(job_id: str) -> discord.ui.View:
    """Buttons on a status message while the job runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job_id: str, task: Task) -> discord.ui.View:
    """Buttons under a result: re-roll always; variations and animate for images."""
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    if not task.is_video:
        view.add_item(VariationsButton(job_id))
        view.add_item(AnimateButton(job_id))
    return view
