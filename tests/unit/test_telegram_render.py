"""What the bot writes: callback data, captions within Telegram's limits, status lines."""

from __future__ import annotations

import html
import re

import pytest

from reelbot.bots.telegram.render import (
    CALLBACK_DATA_LIMIT,
    CAPTION_LIMIT,
    PREFIX,
    caption_html,
    decode_button,
    encode_button,
    keyboard,
    status_text,
    utf16_len,
)
from reelbot.catalog import Catalog, Task
from reelbot.chat.replies import Button
from reelbot.chat.texts import Status
from reelbot.errors import InvalidPrompt, MissingImage
from reelbot.jobs import (
    MAX_PROMPT_CHARS,
    GenerationParams,
    JobStatus,
    job_id_for,
    resolve,
    seed_for,
)


def _params(catalog: Catalog, text: str, task: Task = Task.IMAGINE) -> GenerationParams:
    job_id = job_id_for("telegram", "1:1")
    return resolve(task, text, catalog, has_image=task.needs_image, default_seed=seed_for(job_id))


@pytest.mark.parametrize("action", list(PREFIX))
def test_callback_data_round_trips_within_64_bytes(action: str) -> None:
    job_id = job_id_for("telegram", "-1001234567890:123456")
    data = encode_button(action, job_id)
    assert len(data.encode()) <= CALLBACK_DATA_LIMIT
    assert decode_button(data) == Button(action, job_id, "")
    # Image i of a grid (U2: upscale image 1) rides as ":<i>", still within the 64 bytes.
    tile = encode_button(action, job_id, 3)
    assert tile == f"{data}:3" and len(tile.encode()) <= CALLBACK_DATA_LIMIT
    assert decode_button(tile) == Button(action, job_id, "", 3)


def test_buttons_posted_before_grids_still_decode() -> None:
    assert decode_button("va:te1abc") == Button("vary", "te1abc", "", None)
    assert decode_button("rr:te1abc") == Button("reroll", "te1abc", "", None)


@pytest.mark.parametrize(
    "data", [None, "", "regen:5", "rr:", "rr:../../x", "zz:abc", "rr", "up:te1:", "up:te1:12"]
)
def test_foreign_callback_data_is_ignored(data: str | None) -> None:
    assert decode_button(data) is None


def test_a_grid_keyboard_has_u1_to_u4_with_reroll_then_v1_to_v4() -> None:
    ups = tuple(Button("upscale", "te1", f"U{i + 1}", i) for i in range(4))
    varies = tuple(Button("vary_subtle", "te1", f"V{i + 1}", i) for i in range(4))
    markup = keyboard((*ups, Button("reroll", "te1", "Re-roll"), *varies))
    assert markup is not None
    rows = [[b.callback_data for b in row] for row in markup.inline_keyboard]
    assert rows == [
        ["up:te1:0", "up:te1:1", "up:te1:2", "up:te1:3", "rr:te1"],
        ["vs:te1:0", "vs:te1:1", "vs:te1:2", "vs:te1:3"],
    ]
    assert [b.text for b in markup.inline_keyboard[1]] == ["V1", "V2", "V3", "V4"]


def test_result_buttons_per_task() -> None:
    image = (Button("reroll", "te1", "Re-roll"), Button("vary", "te1", "Variations"))
    image += (Button("animate", "te1", "Animate"),)
    markup = keyboard(image)
    assert markup is not None
    assert [b.callback_data for b in markup.inline_keyboard[0]] == ["rr:te1", "va:te1", "an:te1"]
    assert markup.inline_keyboard[0][0].text == "🔁 Re-roll"
    assert keyboard(()) is None


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
    def bar(step: int, total: int) -> str:
        return status_text(Status(JobStatus.RUNNING, "x", step=step, total=total))

    # The chat layer's words (reelbot.chat.texts.Status), the same on every platform.
    assert bar(0, 10).startswith("🎨 Running\n")
    assert bar(5, 10).startswith("🎨 Running " + "▰" * 6 + "▱" * 6 + " 5/10")
    assert bar(10, 10).startswith("🎨 Running " + "▰" * 12 + " 10/10")
    running = status_text(Status(JobStatus.RUNNING, "fox", step=3, total=4))
    assert "3/4" in running and "fox" in running
    queued = status_text(Status(JobStatus.QUEUED, "sea", position=3, eta_s=75))
    assert "position 3" in queued and "about 1 min" in queued
    failed = status_text(Status(JobStatus.FAILED, "x", message="Out of memory."))
    assert "Out of memory." in failed
    notice = Status(JobStatus.DELIVERING, "x", message="posting failed 3 times; still trying")
    assert "still trying" in status_text(notice)
    assert utf16_len(status_text(Status(JobStatus.QUEUED, "🦊" * 3000))) <= 4096


def test_plan_keeps_a_given_seed_and_refuses_bad_input(tiny_catalog: Catalog) -> None:
    assert _params(tiny_catalog, "fox --seed 42").seed == 42
    assert _params(tiny_catalog, "fox").seed == seed_for(job_id_for("telegram", "1:1"))
    with pytest.raises(InvalidPrompt):
        _params(tiny_catalog, "")
    with pytest.raises(MissingImage):
        resolve(Task.REMIX, "blue", tiny_catalog, has_image=False)
    with pytest.raises(InvalidPrompt, match="in words"):
        _params(tiny_catalog, "🦊 --seed 3")  # the plan refuses it, for every platform
