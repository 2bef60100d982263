"""Turning what a Telegram user did into a checked job: requester, reply address, request, params.

Pure functions over plain values, so tests call them without Telegram.
"""

from __future__ import annotations

from collections.abc import Collection

from reelbot.catalog import Catalog, Task
from reelbot.jobs import (
    MAX_SEED,
    GenerationParams,
    GenerationRequest,
    Options,
    ReplyAddress,
    Requester,
    job_id_for,
    merge_options,
    parse_prompt,
    resolve,
)

from .parse import check_prompt_text

PLATFORM = "telegram"

TASK_COMMANDS: dict[str, Task] = {task.value: task for task in Task}
"""``/imagine`` → ``Task.IMAGINE`` and so on: the generation commands."""


def requester_for(
    *,
    user_id: int,
    chat_id: int,
    display_name: str = "",
    owner_ids: Collection[str] = (),
    chat_admin: bool = False,
) -> Requester:
    """Who asked; a group chat is the "server" that quotas and queue depth are counted in."""
    return Requester(
        platform=PLATFORM,
        user_id=str(user_id),
        server_id=str(chat_id) if chat_id < 0 else None,
        display_name=display_name,
        is_admin=chat_admin or f"{PLATFORM}:{user_id}" in owner_ids,
        is_owner=f"{PLATFORM}:{user_id}" in owner_ids,
    )


def reply_for(
    *,
    chat_id: int,
    message_id: int,
    status_message_id: int | None = None,
    thread_id: int | None = None,
    max_upload_bytes: int | None = None,
) -> ReplyAddress:
    """Where the result goes: a reply to ``message_id`` in ``chat_id`` (and its forum topic).

    ``max_upload_bytes`` is for a local Bot API server, which takes far bigger files than the
    cloud one; the worker encodes the result to fit it.
    """
    return ReplyAddress(
        platform=PLATFORM,
        channel_id=str(chat_id),
        message_id=str(message_id),
        status_message_id=str(status_message_id) if status_message_id is not None else None,
        thread_id=str(thread_id) if thread_id is not None else None,
        extra={"max_bytes": str(max_upload_bytes)} if max_upload_bytes else {},
    )


def seed_for(job_id: str) -> int:
    """A seed derived from the job id, so a re-run of the same job gives the same result."""
    # The same derivation as reelbot.queue.submit, so the seed shown before and after agree.
    return int(job_id[-8:], 16) % (MAX_SEED + 1)


def plan_job(
    task: Task,
    text: str,
    catalog: Catalog,
    *,
    requester: Requester,
    reply: ReplyAddress,
    source_id: str,
    has_image: bool,
    image_ref: str | None = None,
    explicit: Options | None = None,
    new_seed: bool = False,
) -> tuple[str, GenerationRequest, GenerationParams]:
    """Check a command and build its job: ``(job_id, request, params)``.

    ``new_seed`` drops a seed given in the text or options (a re-roll must not repeat the
    original); the request then carries the prompt alone and every other flag as options.

    Raises:
        UserError: a bad prompt, flag, model or a missing image; nothing is queued.
    """
    job_id = job_id_for(PLATFORM, source_id)
    if new_seed:
        # The seed then comes from the new job's id; the flags keep everything else.
        prompt, from_text = parse_prompt(text)
        merged = merge_options(from_text, explicit or Options())
        text, explicit = prompt, merged.model_copy(update={"seed": None})
    check_prompt_text(parse_prompt(text)[0])
    params = resolve(
        task, text, catalog, explicit=explicit, has_image=has_image, default_seed=seed_for(job_id)
    )
    request = GenerationRequest(
        task=task,
        text=text,
        options=explicit or Options(),
        image_ref=image_ref,
        requester=requester,
        reply=reply,
        source_id=source_id,
    )
    return job_id, request, params
