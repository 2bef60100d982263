"""The slash commands: typed options and thin handlers that hand over to ``bot.DiscordBot``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import discord
from discord import app_commands
from discord.app_commands import Range

from reelbot.bots.discord import render
from reelbot.bots.discord.bot import DiscordBot, send_error
from reelbot.catalog import Task
from reelbot.chat.texts import clip
from reelbot.jobs import MAX_RAW_CHARS, MAX_SEED, Options

Aspect = Literal["1:1", "16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "21:9"]
Interaction = discord.Interaction[Any]
Command = app_commands.Command[Any, ..., None]
Callback = Callable[..., Coroutine[Any, Any, None]]

# Every option of the generation commands: its type, with the static bounds Discord's UI enforces
# (each model's own limits are checked by jobs.resolve, which names the option and its range),
# and what Discord shows under it.
_OPTIONS: dict[str, tuple[Any, str]] = {
    "prompt": (
        Range[str, 1, MAX_RAW_CHARS],
        "what to make; flags like --ar 16:9 --seed 42 work here too",
    ),
    "image": (discord.Attachment, "the picture to start from (PNG, JPEG or WEBP)"),
    "video": (discord.Attachment, "the clip (MP4, MOV, MKV, WebM or GIF)"),
    "mask": (discord.Attachment, "a mask of the picture: white where to change it"),
    **{f"image{i}": (discord.Attachment, f"picture {i} to blend in") for i in (2, 3, 4)},
    "last_image": (discord.Attachment, "the picture the video ends on"),
    "negative": (str, "what to keep out of it"),
    "seed": (Range[int, 0, MAX_SEED], "the same seed and settings give the same result"),
    "aspect": (Aspect, "width:height"),
    "steps": (Range[int, 1, 150], "more steps: slower, often better"),
    "guidance": (Range[float, 0.0, 30.0], "how closely to follow the prompt"),
    "model": (str, "which model (see /models)"),
    "strength": (Range[float, 0.05, 1.0], "how much to change the picture (0.05 to 1)"),
    "duration": (Range[float, 0.1, 60.0], "seconds of video"),
    "fps": (Range[int, 1, 60], "frames per second"),
    "count": (Range[int, 1, 4], "how many images: 2 to 4 make a grid"),
    "scale": (Literal[2, 4], "how many times bigger"),
    "creative": (bool, "let the image model add detail (slower, costs more)"),
    "style": (str, "a named style: photo, anime, watercolor, pixel, cinematic …"),
}
_COMMON = ("negative", "seed", "aspect", "steps", "guidance", "model")
_IMAGE, _VIDEO = (*_COMMON, "count"), (*_COMMON, "duration", "fps")
_BLEND = ("prompt", "image3", "image4", *_IMAGE)
# Each generation command: what it does, its required options, its optional ones, in order.
_GENERATION: dict[Task, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    Task.IMAGINE: ("Make an image from a prompt", ("prompt",), _IMAGE),
    Task.REMIX: (
        "Change a picture (or a region)",
        ("prompt", "image"),
        (*_IMAGE, "strength", "mask"),
    ),
    Task.VIDEO: ("Make a short video from a prompt", ("prompt",), _VIDEO),
    Task.ANIMATE: ("Bring a picture to life", ("image",), ("prompt", *_VIDEO, "last_image")),
    Task.UPSCALE: ("Make a picture 2 or 4 times bigger", ("image",), ("scale", "creative")),
    Task.RESTYLE: ("Restyle a clip", ("prompt", "video"), (*_COMMON, "strength", "style")),
    Task.SMOOTH: ("Smoother motion: twice the frames of a video", ("video",), ()),
    Task.BLEND: ("Combine 2 to 4 pictures", ("image", "image2"), _BLEND),
    Task.DESCRIBE: ("Four prompts for a picture, each a button", ("image",), ("model", "seed")),
}


def bot_of(interaction: Interaction) -> DiscordBot:
    """The adapter's handlers, hung on the client at start."""
    bot: DiscordBot | None = getattr(interaction.client, "reelbot_bot", None)
    if bot is None:
        raise RuntimeError("the Discord client has no reelbot bot attached")
    return bot


async def model_autocomplete(
    interaction: Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Models serving the command's task, filtered by what the user typed."""
    command = interaction.command
    try:
        task = Task(command.name if command is not None else "")
    except ValueError:
        return []
    models = bot_of(interaction).service.catalog.for_task(task)
    wanted = current.lower()
    return [
        app_commands.Choice(name=clip(f"{m.name} · {m.description}", 100), value=m.name)
        for m in models
        if wanted in m.name.lower()
    ][:25]


_contexts = app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
_installs = app_commands.allowed_installs(guilds=True, users=True)


def _command(description: str, *, name: str = "") -> Callable[[Callback], Command]:
    """A command usable in servers, DMs and group DMs, installable to a server or a user."""

    def make(callback: Callback) -> Command:
        anywhere = _installs(_contexts(callback))
        return app_commands.command(name=name or callback.__name__, description=description)(
            anywhere
        )

    return make


def _generation(task: Task) -> Command:
    """A generation command from the table: typed, described options (discord.py reads them
    from the callback's signature) and models completed as typed."""
    description, required, optional = _GENERATION[task]

    async def generate(interaction: Interaction, **given: Any) -> None:
        files = {k: v for k, v in given.items() if isinstance(v, discord.Attachment)}
        given["n"] = given.pop("count", None)
        options = Options(**{k: v for k, v in given.items() if k in Options.model_fields})
        prompt = given.get("prompt") or ""
        await bot_of(interaction).generate(interaction, task, prompt, options, files)

    def option(name: str, default: Any) -> inspect.Parameter:  # a default: not required
        kind = inspect.Parameter.KEYWORD_ONLY
        return inspect.Parameter(name, kind, default=default, annotation=_OPTIONS[name][0])

    first = inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_ONLY)
    params = [option(n, inspect.Parameter.empty) for n in required]
    params += [option(n, None) for n in optional]
    generate.__signature__ = inspect.Signature([first, *params])  # type: ignore[attr-defined]
    callback = app_commands.describe(**{p.name: _OPTIONS[p.name][1] for p in params})(generate)
    if "model" in optional:  # /upscale has no model to complete
        callback = app_commands.autocomplete(model=model_autocomplete)(callback)
    return _command(description, name=task.value)(callback)


GENERATION = tuple(_generation(task) for task in _GENERATION)


@_command("Your queued and running jobs")
async def jobs(interaction: Interaction) -> None:
    """/jobs."""
    await bot_of(interaction).say(interaction, "jobs")


@_command("Cancel one of your jobs (the latest if none is named)")
@app_commands.describe(job="the job id, as /jobs shows it")
async def cancel(interaction: Interaction, job: str | None = None) -> None:
    """/cancel [job]."""
    await bot_of(interaction).say(interaction, "cancel", job or "")


@_command("Your last results, each with /show")
async def history(interaction: Interaction) -> None:
    """/history."""
    await bot_of(interaction).say(interaction, "history")


@_command("Post one of your results again (or its settings, with Re-run)")
@app_commands.describe(job="the job id, as /history shows it")
async def show(interaction: Interaction, job: str) -> None:
    """/show job."""
    await bot_of(interaction).show(interaction, job)


@_command("Your remaining budget")
async def quota(interaction: Interaction) -> None:
    """/quota."""
    await bot_of(interaction).say(interaction, "quota")


@_command("The models this deployment serves")
async def models(interaction: Interaction) -> None:
    """/models."""
    await bot_of(interaction).say(interaction, "models")


@_command("How to use reelbot", name="help")
async def help_(interaction: Interaction) -> None:
    """/help."""
    await interaction.response.send_message(render.HELP_TEXT, ephemeral=True)


# Discord hides /admin from members without Manage Server, but does not stop a crafted or stale
# client from sending it: every subcommand checks the permission again (DiscordBot.admin).
admin = app_commands.Group(
    name="admin",
    description="Server settings and the queue (Manage Server)",
    default_permissions=discord.Permissions(manage_guild=True),
    guild_only=True,
)


@admin.command(name="status", description="Queue depth and workers")
async def admin_status(interaction: Interaction) -> None:
    """/admin status."""
    await bot_of(interaction).say(interaction, "admin", "status")


@admin.command(name="cancel", description="Cancel a job in this server (as /cancel does)")
@app_commands.describe(job="the job id")
async def admin_cancel(interaction: Interaction, job: str) -> None:
    """/admin cancel job."""
    await bot_of(interaction).say(interaction, "admin", f"cancel {job}")


@admin.command(name="audit", description="Recent quota and policy changes, refused prompts")
@app_commands.describe(count="how many entries (default 10)")
async def admin_audit(interaction: Interaction, count: int = 10) -> None:
    """/admin audit [count]."""
    await bot_of(interaction).say(interaction, "admin", f"audit {count}")


@admin.command(name="policy", description="Content policy: blocked words, flagged results")
@app_commands.describe(
    action="show, mode, nsfw-mode, threshold, count, block, unblock, pattern, unpattern, words",
    value="block|spoiler|allow|inherit for modes, 0-1 threshold, 1-4 count, else a word/regex",
)
async def admin_policy(interaction: Interaction, action: str = "show", value: str = "") -> None:
    """/admin policy [action] [value]."""
    await bot_of(interaction).say(interaction, "admin", f"policy {action} {value}".strip())


_SCOPE = "server, role:ID, user:ID, a @mention, or a full scope such as discord:server:ID"
_LIMITS = "for set: KEY=VALUE … e.g. daily=50 cooldown=30 (daily, concurrent, cooldown, queue)"
_QuotaAction = Literal["set", "show", "reset", "usage"]


@admin.command(name="quota", description="Credit budgets of this server, its roles and users")
@app_commands.describe(action="reset: forget today's use", scope=_SCOPE, limits=_LIMITS)
async def admin_quota(
    interaction: Interaction, action: _QuotaAction = "show", scope: str = "server", limits: str = ""
) -> None:
    """/admin quota [action] [scope] [limits]: the same words as /admin quota on every platform."""
    await bot_of(interaction).say(interaction, "admin", f"quota {action} {scope} {limits}".strip())


COMMANDS: tuple[Command | app_commands.Group, ...] = (*GENERATION, jobs, cancel, quota, models)
COMMANDS += (help_, history, show, admin)


class Tree(app_commands.CommandTree[Any]):
    """The command tree with the adapter's one error handler."""

    async def on_error(self, interaction: Interaction, error: app_commands.AppCommandError) -> None:
        """Every command error, ours or not, gets the mapped reply."""
        await send_error(interaction, error)


def build_tree(client: discord.Client) -> Tree:
    """A command tree with every reelbot command on it."""
    tree = Tree(client)
    for command in COMMANDS:
        tree.add_command(command)
    return tree
