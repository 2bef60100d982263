"""What the bot writes: callback data, captions within Telegram's limits, status lines."""

from __future__ import annotations

import html
import re

import pytest

from reelbot.bots.telegram.plan import plan_job, reply_for, requester_for
from reelbot.bots.telegram.render import (
    CALLBACK_DATA_LIMIT,
    CAPTION_LIMIT,
    Action,
    ButtonPress,
    caption_html,
    decode_button,
    encode_button,
    progress_bar,
    result_keyboard,
    status_text,
    utf16_len,
)
from reelbot.catalog import Catalog, Task
from reelbot.errors import InvalidPrompt, MissingImage
from reelbot.jobs import MAX_PROMPT_CHARS, JobStatus, job_id_for


def _params(catalog: Catalog, text: str, task: Task = Task.IMAGINE) -> object:
    return plan_job(
        task,
        text,
        catalog,
        requester=requester_for(user_id=1, chat_id=1),
        reply=reply_for(chat_id=1, message_id=1),
        source_id="1:1",
        has_image=task.needs_image,
    )[2]


@pytest.mark.parametrize("action", list(Action))
def test_callback_data_round_trips_within_64_bytes(action: Action) -> None:
    job_id = job_id_for("telegram", "-1001234567890:123456")
    data = encode_button(action, job_id)
    assert len(data.encode()) <= CALLBACK_DATA_LIMIT
    assert decode_button(data) == ButtonPress(action, job_id)


@pytest.mark.parametrize("data", [None, "", "regen:5", "rr:", "rr:../../x", "zz:abc", "rr"])
def test_foreign_callback_data_is_ignored(data: str | None) -> None:
    assert decode_button(data) is None


def test_result_buttons_per_task() -> None:
    image = [b.callback_data for b in result_keyboard("te1", Task.IMAGINE).inline_keyboard[0]]
    video = [b.callback_data for b in result_keyboard("te1", Task.VIDEO).inline_keyboard[0]]
    assert image == ["rr:te1", "va:te1", "an:te1"]
    assert video == ["rr:te1"]


def _visible(caption: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", caption))


def test_caption_holds_prompt_seed_and_flags(tiny_catalog: Catalog) -> None:
    params = _params(tiny_catalog, "a <b>bold</b> fox & friends --seed 42 --ar 16:9")
    caption = caption_html(params, requested_by="Alice <3")  # type: ignore[arg-type]
    visible = _visible(caption)
    assert "a <b>bold</b> fox & friends" in visible  # shown as typed, not as markup
    assert "&lt;b&gt;" in caption and "Alice &lt;3" in caption
    assert "--seed 42" in visible and "seed 42" in visible and "--steps 2" in visible


def test_a_long_prompt_is_cut_to_the_caption_limit(tiny_catalog: Catalog) -> None:
    prompt = ("𝓯𝓸𝔁 " * 400)[: MAX_PROMPT_CHARS - 10]  # astral characters count 2 in UTF-16
    params = _params(tiny_catalog, f"{prompt} --seed 7")
    visible = _visible(caption_html(params))  # type: ignore[arg-type]
    assert utf16_len(visible) <= CAPTION_LIMIT
    assert "…" in visible and "--seed 7" in visible


def test_progress_bar_and_status_lines() -> None:
    assert progress_bar(0, 10) == "▱" * 10
    assert progress_bar(5, 10) == "▰" * 5 + "▱" * 5
    assert progress_bar(10, 10) == "▰" * 10
    running = status_text(Task.IMAGINE, "fox", JobStatus.RUNNING, step=3, total=4)
    assert "step 3/4" in running and "fox" in running
    queued = status_text(Task.VIDEO, "sea", JobStatus.QUEUED, position=3, eta_s=75)
    assert "#3 in line" in queued and "about 1 min" in queued
    failed = status_text(Task.IMAGINE, "x", JobStatus.FAILED, message="Out of memory.")
    assert "Out of memory." in failed


def test_plan_derives_the_job_id_and_a_reroll_changes_the_seed(tiny_catalog: Catalog) -> None:
    kwargs = {
        "requester": requester_for(user_id=5, chat_id=-100),
        "reply": reply_for(chat_id=-100, message_id=9),
        "has_image": False,
    }
    job_a, request, params = plan_job(
        Task.IMAGINE, "fox --seed 42", tiny_catalog, source_id="-100:9", **kwargs
    )
    job_b, _, _ = plan_job(
        Task.IMAGINE, "fox --seed 42", tiny_catalog, source_id="-100:9", **kwargs
    )
    assert job_a == job_b == job_id_for("telegram", "-100:9")
    assert params.seed == 42 and request.requester.server_id == "-100"
    _, _, rerolled = plan_job(
        Task.IMAGINE, "fox --seed 42", tiny_catalog, source_id="cb:77", new_seed=True, **kwargs
    )
    assert rerolled.seed != 42


def test_plan_refuses_bad_input(tiny_catalog: Catalog) -> None:
    kwargs = {
        "requester": requester_for(user_id=5, chat_id=5),
        "reply": reply_for(chat_id=5, message_id=1),
        "source_id": "5:1",
    }
    with pytest.raises(InvalidPrompt):
        plan_job(Task.IMAGINE, "", tiny_catalog, has_image=False, **kwargs)
    with pytest.raises(MissingImage):
        plan_job(Task.REMIX, "blue", tiny_catalog, has_image=False, **kwargs)
    with pytest.raises(InvalidPrompt):
        plan_job(Task.IMAGINE, "🦊 --seed 1", tiny_catalog, has_image=False, **kwargs)


def test_owners_are_admins() -> None:
    assert requester_for(user_id=7, chat_id=7, owner_ids=("telegram:7",)).is_admin
    assert not requester_for(user_id=7, chat_id=7, owner_ids=("discord:7",)).is_admin
    # Owners also say so: a chat admin's rights stop at their chat, an owner's do not.
    assert requester_for(user_id=7, chat_id=-5, owner_ids=("telegram:7",)).is_owner
    assert not requester_for(user_id=7, chat_id=-5, chat_admin=True).is_owner
