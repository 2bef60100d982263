"""The chat layer's pure parts: typed commands, what a result offers next, Info and history
visibility, and the input-shaped size of a remix."""

from __future__ import annotations

from typing import Any

import pytest

from reelbot.catalog import Task, load_catalog
from reelbot.chat.commands import is_generation, split_command, unknown_command
from reelbot.chat.followups import FollowUp, follow_up, rerun_task
from reelbot.chat.history import History, Shown, ago, info_text
from reelbot.chat.service import Context
from reelbot.chat.surface import result_buttons
from reelbot.errors import InvalidOption, InvalidPrompt, JobNotFound
from reelbot.jobs import GenerationRequest, JobStatus, Options, ReplyAddress, Requester, resolve
from reelbot.store.records import JobRecord, ResultInfo

TINY = load_catalog("tiny")


def _record(task: Task = Task.IMAGINE, text: str = "a fox", **fields: Any) -> JobRecord:
    user = fields.pop("user", "ann")
    channel = fields.pop("channel", "room")
    needs = {"has_image": task.needs_image, "has_video": task.needs_video}
    params = resolve(task, text, TINY, default_seed=3, **needs)
    return JobRecord(
        id=fields.pop("id", "me0123"),
        queue="q",
        request=GenerationRequest(
            task=task,
            text=text,
            requester=Requester(platform="memo", user_id=user, server_id="room"),
            reply=ReplyAddress(platform="memo", channel_id=channel),
            source_id="1",
        ),
        params=params,
        created_at=0.0,
        updated_at=0.0,
        **fields,
    )


def test_a_command_is_split_and_unknown_ones_get_the_nearest() -> None:
    assert split_command("  /Imagine a fox --seed 7 ") == ("imagine", "a fox --seed 7")
    assert split_command("/jobs") == ("jobs", "")
    with pytest.raises(InvalidPrompt, match="start with a slash"):
        split_command("imagine a fox")
    assert is_generation("imagine") and is_generation("upscale") and not is_generation("jobs")
    assert not is_generation("upscale_video")  # a video's Upscale button, not a command
    assert "Did you mean /history?" in unknown_command("histroy")
    assert "Did you mean" not in unknown_command("zzzzzz")


def test_what_a_result_offers_next() -> None:
    image = _record(
        result=ResultInfo(ref="r", mime="image/png", ext="png", size=1, width=64, height=64)
    )
    assert [b.action for b in result_buttons(image)] == [
        "upscale",
        "vary_subtle",
        "vary_strong",
        "reroll",
        "animate",
        *("zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down"),
        "info",
    ]
    video = _record(Task.VIDEO, "waves")
    clip = ["extend", "smooth", "upscale", "info"]
    assert [b.action for b in result_buttons(video)] == ["reroll", *clip]
    assert [b.label for b in result_buttons(video)][3] == "Upscale"
    assert [b.action for b in result_buttons(_record(Task.SMOOTH, ""))] == clip
    # An upscaled clip is upscaled once: no Upscale again, and no Re-roll (it has no prompt).
    upscaled = _record(Task.UPSCALE_VIDEO, "")
    assert [b.action for b in result_buttons(upscaled)] == ["extend", "smooth", "info"]
    said = image.result.model_copy(update={"texts": ("a", "b", "c", "d")}) if image.result else None
    described = result_buttons(image.model_copy(update={"result": said}))
    assert [(b.action, b.label, b.index) for b in described][:2] == [
        ("imagine", "1", 0),
        ("imagine", "2", 1),
    ]
    assert len(described) == 5 and described[-1].action == "info"
    tile = ResultInfo(ref="t", mime="image/png", ext="png", size=1, width=64, height=64)
    grid = image.result.model_copy(update={"tiles": (tile,) * 4}) if image.result else None
    buttons = result_buttons(image.model_copy(update={"result": grid}))
    assert [b.label for b in buttons] == [
        *("U1", "U2", "U3", "U4", "Re-roll", "V1", "V2", "V3", "V4", "Info")
    ]
    assert [b.index for b in buttons if b.label.startswith("U")] == [0, 1, 2, 3]
    # A variation remixes; re-run repeats the task with its seed; "vary" is the old subtle one.
    assert rerun_task("vary_strong", Task.IMAGINE) == Task.REMIX
    assert rerun_task("vary", Task.IMAGINE) == Task.REMIX
    assert rerun_task("rerun", Task.VIDEO) == Task.VIDEO


def test_info_says_how_a_result_was_made() -> None:
    record = _record(text="a red fox --seed 9 --no blur")
    record = record.model_copy(
        update={
            "status": JobStatus.DELIVERED,
            "times": {JobStatus.RUNNING: 10.0, JobStatus.DELIVERING: 12.5},
        }
    )
    text = info_text(record)
    assert "Prompt: a red fox" in text and "Negative: blur" in text
    assert "seed 9" in text and f"{record.params.width}×{record.params.height}" in text
    assert "Took 2.5 s" in text and "--seed 9" in text
    gone = Shown(record, None)
    assert "expired" not in gone.text and "no result" in gone.text
    assert [b.action for b in gone.buttons] == ["rerun", "info"]
    assert ago(30) == "just now" and ago(7200) == "2 h ago" and ago(3 * 86400) == "3 days ago"


def test_history_shows_only_the_askers_jobs_and_never_a_private_one_in_a_group() -> None:
    class Service:
        platform = "memo"

    history = History(Service())  # type: ignore[arg-type]
    mine_here, mine_in_dm = _record(), _record(channel="ann-dm")
    ann = Requester(platform="memo", user_id="ann", server_id="room")
    in_room, in_dm = Context(ann, "room"), Context(ann.model_copy(update={"server_id": None}), "x")
    assert history.visible(mine_here, in_room) and not history.visible(mine_in_dm, in_room)
    assert history.visible(mine_in_dm, in_dm)  # a private chat sees all of one's own
    bob = Context(Requester(platform="memo", user_id="bob", server_id="room"), "room")
    assert not history.visible(mine_here, bob)
    owner = Context(bob.requester.model_copy(update={"is_owner": True}), "room")
    assert history.visible(mine_here, owner)


def test_a_remix_keeps_the_inputs_shape_at_the_nearest_allowed_size() -> None:
    wide = resolve(Task.REMIX, "winter", TINY, has_image=True, image_size=(1920, 1080))
    tall = resolve(Task.REMIX, "winter", TINY, has_image=True, image_size=(500, 1000))
    square = resolve(Task.REMIX, "winter", TINY, has_image=True, image_size=(300, 300))
    assert wide.width > wide.height and tall.height > tall.width
    assert square.width == square.height
    # An extreme image is held to the 4:1 a model takes, not refused.
    strip = resolve(Task.REMIX, "winter", TINY, has_image=True, image_size=(9000, 100))
    assert strip.width / strip.height == pytest.approx(4, rel=0.3)
    # --ar given by the user still wins, and is still checked.
    asked = resolve(Task.REMIX, "winter --ar 1:1", TINY, has_image=True, image_size=(1920, 1080))
    assert asked.width == asked.height
    with pytest.raises(InvalidOption):
        resolve(Task.REMIX, "winter --ar 9:1", TINY, has_image=True, image_size=(1920, 1080))


def test_owners_are_admins_everywhere_and_say_so() -> None:
    from reelbot.chat.service import ChatService
    from reelbot.config import Settings
    from reelbot.store.connection import connect

    settings = Settings(owner_ids=("telegram:7",), models="tiny")
    service = ChatService(connect("redis://127.0.0.1:1"), settings, TINY, platform="telegram")
    owner, member = service.requester("7"), service.requester("8", server_id="-5")
    assert owner.is_admin and owner.is_owner and owner.server_id is None
    assert not member.is_admin and not member.is_owner and member.server_id == "-5"
    # A group admin's rights stop at their group: they are an admin, not an owner.
    admin = service.requester("8", server_id="-5", is_admin=True)
    assert admin.is_admin and not admin.is_owner
    # Owners are per platform: telegram:7 owns nothing on Discord.
    other = ChatService(connect("redis://127.0.0.1:1"), settings, TINY, platform="discord")
    assert not other.requester("7").is_owner


def test_what_each_new_button_makes() -> None:
    catalog = load_catalog("tiny")
    info = ResultInfo(ref="r", mime="image/png", ext="png", size=1, width=64, height=64)
    image = _record(result=info)
    zoom = follow_up("zoom_2", image, catalog)
    assert (zoom.task, zoom.options, zoom.source) == (Task.INPAINT, Options(zoom=2.0), info)
    assert follow_up("pan_left", image, catalog).options == Options(pan="left")
    clip = info.model_copy(update={"mime": "video/mp4", "ext": "mp4", "frames": 9})
    video = _record(Task.VIDEO, "waves", result=clip)
    extend = follow_up("extend", video, catalog)
    assert (extend.task, extend.video, extend.source) == (Task.ANIMATE, clip, None)
    assert follow_up("smooth", video, catalog).task == Task.SMOOTH
    # Upscale on a video enlarges the stored clip; on an image it stays the image's /upscale.
    up = follow_up("upscale", video, catalog)
    assert (up.task, up.prompt, up.options, up.video, up.source) == (
        Task.UPSCALE_VIDEO, "", None, clip, None
    )  # fmt: skip
    assert follow_up("upscale", image, catalog).task == Task.UPSCALE
    with pytest.raises(JobNotFound, match="no video"):
        follow_up("extend", image, catalog)
    with pytest.raises(JobNotFound, match="no image"):
        follow_up("zoom_2", video, catalog)
    described = _record(result=info.model_copy(update={"texts": ("a fox", "a cat")}))
    assert follow_up("imagine", described, catalog, 1) == FollowUp(Task.IMAGINE, "a cat", None)
    with pytest.raises(JobNotFound, match="suggestion"):
        follow_up("imagine", described, catalog, 3)


def test_the_command_menu_names_every_command_but_admin_within_telegrams_limits() -> None:
    # /restyle, /smooth, /blend and /describe were answered but missing from Telegram's menu.
    import re

    from reelbot.chat.commands import NAMES
    from reelbot.chat.texts import MENU

    # /inpaint and /keyframes are what /remix with a mask and /animate with two pictures become.
    assert {name for name, _ in MENU} == set(NAMES) - {"admin", "inpaint", "keyframes"}
    # setMyCommands: a command is 1-32 of a-z, 0-9 and _; a description 1-256 characters.
    assert all(re.fullmatch(r"[a-z0-9_]{1,32}", n) and 1 <= len(d) <= 256 for n, d in MENU)


def test_a_videos_upscale_reads_as_upscale_not_as_an_internal_task() -> None:
    # Info, /history and Discord's header said "/upscale_video", a command nobody can type.
    record = _record(Task.UPSCALE_VIDEO, "")
    sized = record.params.model_copy(update={"width": 512, "height": 288, "frames": 9})
    record = record.model_copy(update={"params": sized})
    assert Task.UPSCALE_VIDEO.command == "upscale" and Task.IMAGINE.command == "imagine"
    assert "· /upscale ·" in info_text(record) and "upscale_video" not in info_text(record)
