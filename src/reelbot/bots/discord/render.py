"""Discord's markup around the chat layer's words: bold states, captions, all within 2000 chars."""

from __future__ import annotations

import re

from reelbot.chat.texts import BUTTONS_HELP, Status, clip, final_text
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus
from reelbot.store.records import JobRecord

MAX_CONTENT = 2000
"""Discord's limit on a message's content."""
_STATE = re.compile(r"^(\S+ )(\w+)")


def status_text(status: Status) -> str:
    """The status message: ``⏳ **Queued** · position 1`` and the prompt, quoted."""
    return clip(_STATE.sub(r"\1**\2**", status.text, count=1), MAX_CONTENT)


def result_text(
    request: GenerationRequest, params: GenerationParams, *, mention: bool, note: str = ""
) -> str:
    """The caption of a result: who asked, the prompt, and the flags that reproduce it."""
    who = f"<@{request.requester.user_id}> " if mention else ""
    flags = f"`{params.summary()}`"
    if params.negative_prompt:
        flags += f"\n--no {clip(params.negative_prompt, 300)}"
    tail = f"\n{flags}" + (f"\n{clip(note, 200)}" if note else "")
    head = f"{who}**/{params.task.command}** "
    room = MAX_CONTENT - len(head) - len(tail)
    return head + clip(params.prompt or "(no prompt)", max(room, 20)) + tail


def failure_text(request: GenerationRequest, message: str | None, *, mention: bool) -> str:
    """The text posted when a job failed: ``**/imagine** ⚠️ Failed: …`` (chat's words)."""
    who = f"<@{request.requester.user_id}> " if mention else ""
    said = final_text(JobStatus.FAILED, message)
    return clip(f"{who}**/{request.task.command}** {said}", MAX_CONTENT)


def filename_of(record: JobRecord) -> str:
    """``reelbot-<job>.png``; ``SPOILER_`` first hides it until clicked (Discord's convention)."""
    ext = record.result.ext if record.result else ("mp4" if record.params.task.is_video else "png")
    name = f"reelbot-{record.id}.{ext}"
    return f"SPOILER_{name}" if record.result and record.result.spoiler else name


HELP_TEXT = f"""**reelbot** makes images and videos from a prompt.
`/imagine a red fox in the snow count:4` · an image, or a grid of up to four
`/remix prompt image:<attachment>` (`mask:` white = change) · `/upscale image:` · enlarge
`/video waves at sunset` · `/animate image:` (`last_image:` to end on) · bring it to life
`/restyle watercolor video:<clip>` · `/smooth video:` · `/blend image: image2:` · `/describe image:`
Options: `negative`, `seed`, `aspect`, `steps`, `guidance`, `model`, `strength`, \
`duration`, `fps`, or flags in the prompt: `--ar 16:9 --seed 42 --no text --steps 4 --model NAME`.
{BUTTONS_HELP}
`/history` your results · `/show` one again · `/jobs` · `/cancel` · `/models` · `/quota`"""


def jump_link(record: JobRecord) -> str | None:
    """Discord's link to a posted result (``@me`` in a DM), for ``/history``."""
    if record.posted_message_id is None:
        return None
    where = f"{record.requester.server_id or '@me'}/{record.request.reply.channel_id}"
    return f"https://discord.com/channels/{where}/{record.posted_message_id}"
