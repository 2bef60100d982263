"""What a button on a result makes: the follow-up request, decided from the stored job alone.

A re-roll repeats the job with a fresh seed, a re-run with the same one; Vary remixes the image
(subtle or strong), Animate brings it to life, Upscale enlarges it. The source image always comes
from the stored result (``FollowUp.source``), never from the platform, so a failed platform
download cannot lose the click; ``ChatService.rerun`` fetches it and queues the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reelbot.catalog import Catalog, Task
from reelbot.errors import JobNotFound
from reelbot.jobs import Options, merge_options, parse_prompt
from reelbot.store.records import JobRecord, ResultInfo

__all__ = ["UPSCALE_BUTTON", "VARIATIONS", "FollowUp", "Rerun", "follow_up", "rerun_task"]

Rerun = Literal[
    "reroll", "rerun", "vary", "vary_subtle", "vary_strong", "animate", "upscale",
    "extend", "smooth", "zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down",
    "imagine",
]  # fmt: skip
VARIATIONS = ("vary", "vary_subtle", "vary_strong")
"""``vary`` is the subtle one (buttons posted before there were two)."""
UPSCALE_BUTTON = Options(scale=2)
"""What an Upscale button asks for: the subtle ×2 (``/upscale`` offers ×4 and --creative)."""
EDGES: dict[str, Options] = {
    "zoom_2": Options(zoom=2.0),
    "zoom_15": Options(zoom=1.5),
    **{f"pan_{way}": Options(pan=way) for way in ("left", "right", "up", "down")},
}
"""Zoom Out and Pan: the image padded, then its new border painted (``/inpaint``)."""
VIDEO_ACTIONS = ("extend", "smooth")


@dataclass(frozen=True)
class FollowUp:
    """The request a button makes."""

    task: Task
    prompt: str
    options: Options | None
    source: ResultInfo | None = None
    """The stored image it starts from (a result, or one image of a grid)."""
    video: ResultInfo | None = None
    """The stored clip it starts from (Extend continues it, Smooth adds frames to it, Upscale
    enlarges it)."""
    image_ref: str | None = None
    """Or the old job's own input, as it was (a re-roll of a remix)."""


def rerun_task(how: Rerun, task: Task) -> Task:
    """What a result's button makes: a re-roll repeats the job's task, vary remixes the image,
    animate brings it to life."""
    if how == "upscale":
        return Task.UPSCALE
    if how in ("reroll", "rerun"):
        return task
    return Task.ANIMATE if how == "animate" else Task.REMIX


def follow_up(how: Rerun, old: JobRecord, catalog: Catalog, index: int | None = None) -> FollowUp:
    """The request ``how`` makes from ``old``; ``index`` picks one image of a grid as the
    source, and a re-roll of a grid makes a grid of the same size again."""
    prompt, from_text = parse_prompt(old.request.text)
    count = old.params.count if old.params.count > 1 else None
    if how in ("reroll", "rerun"):
        # Re-run: the same seed, so the same result; re-roll: a fresh one.
        seed = old.params.seed if how == "rerun" else None
        options = merge_options(from_text, old.request.options).model_copy(
            update={"seed": seed, "n": count}
        )
        return FollowUp(old.request.task, prompt, options, image_ref=old.request.image_ref)
    if how == "imagine":  # one of /describe's suggestions
        texts = old.result.texts if old.result is not None else ()
        if index is None or not 0 <= index < len(texts):
            raise JobNotFound("That suggestion is gone; run /describe again.")
        return FollowUp(Task.IMAGINE, texts[index], None)
    if how == "upscale" and old.params.task.is_video:  # every frame ×2 by the upscaler
        if old.result is None:
            raise JobNotFound("That job has no video to start from.")
        return FollowUp(Task.UPSCALE_VIDEO, "", None, video=old.result)
    if how in VIDEO_ACTIONS:
        if old.result is None or not old.params.task.is_video:
            raise JobNotFound("That job has no video to start from.")
        if how == "smooth":
            return FollowUp(Task.SMOOTH, "", None, video=old.result)
        # Extend: an /animate from the clip's last frame, by the model that made it if it can.
        spec = catalog.models.get(old.params.model)
        model = spec.name if spec is not None and Task.ANIMATE in spec.tasks else None
        text = prompt or parse_prompt(old.params.prompt)[0]
        return FollowUp(Task.ANIMATE, text, Options(model=model), video=old.result)
    if old.result is None or old.params.task.is_video:
        raise JobNotFound("That job has no image to start from.")
    source = old.result
    if index is not None and old.result.tiles:
        if not 0 <= index < len(old.result.tiles):
            raise JobNotFound(f"That grid has no image {index + 1}.")
        source = old.result.tiles[index]
    if how in EDGES:  # the prompt carries on; a plain one when the image had none
        return FollowUp(Task.INPAINT, prompt, EDGES[how], source)
    task = rerun_task(how, old.request.task)
    if task == Task.UPSCALE:
        return FollowUp(task, "", UPSCALE_BUTTON, source)
    varied = variation(old, how, catalog) if how in VARIATIONS else None
    return FollowUp(task, prompt, varied, source)


def variation(old: JobRecord, how: Rerun, catalog: Catalog) -> Options:
    """A variation keeps the source's model (where it remixes), style, negative and grid
    size; its size follows the source image; its strength is the model's subtle or strong
    one (``vary_subtle`` / ``vary_strong`` in the model TOML)."""
    said = merge_options(parse_prompt(old.request.text)[1], old.request.options)
    source = catalog.models.get(old.params.model)
    model = source.name if source is not None and Task.REMIX in source.pipelines else None
    spec = catalog.pick(Task.REMIX, model)
    strength = None
    if spec.strength_default is not None:  # a model that edits by reference takes none
        strength = spec.vary_strong if how == "vary_strong" else spec.vary_subtle
    return Options(
        model=model,
        style=said.style,
        negative=said.negative,
        strength=strength,
        n=old.params.count if old.params.count > 1 else None,
    )
