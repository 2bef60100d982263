"""Reading Telegram messages: commands for this bot, the input image, and prompt checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from telegram import Update

from reelbot.bots.telegram.parse import (
    DOWNLOAD_LIMIT,
    Command,
    command_of,
    find_inputs,
    parse_command,
)
from reelbot.errors import InvalidImage, InvalidPrompt, InvalidVideo
from reelbot.jobs import check_prompt_text

ALICE = {"id": 111, "is_bot": False, "first_name": "Alice", "username": "alice"}
GROUP = {"id": -1001234567890, "title": "Emu Group", "type": "supergroup"}
# A photo message with a command caption, as the real Bot API sent it (shared reference).
PHOTO_MESSAGE: dict[str, Any] = {
    "message_id": 1,
    "from": ALICE,
    "chat": GROUP,
    "date": 1795718490,
    "photo": [
        {"file_id": "small", "file_unique_id": "u", "file_size": 11, "width": 90, "height": 90},
        {"file_id": "big", "file_unique_id": "u", "file_size": 11, "width": 800, "height": 800},
        {"file_id": "mid", "file_unique_id": "u", "file_size": 11, "width": 320, "height": 320},
    ],
    "caption": "/remix@emu_bot make it blue",
    "caption_entities": [{"offset": 0, "length": 14, "type": "bot_command"}],
}


def _message(data: dict[str, Any]) -> Any:
    update = Update.de_json({"update_id": 1, "message": data}, None)
    assert update is not None and update.message is not None
    return update.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/imagine a red fox --ar 16:9", Command("imagine", "a red fox --ar 16:9")),
        ("/imagine@emu_bot a red fox", Command("imagine", "a red fox")),
        ("/Imagine@EMU_BOT  fox\nin snow", Command("imagine", "fox\nin snow")),
        ("/help", Command("help", "")),
        ("/help@emu_bot", Command("help", "")),
    ],
)
def test_commands_for_this_bot_are_parsed(text: str, expected: Command) -> None:
    assert parse_command(text, "emu_bot") == expected


@pytest.mark.parametrize(
    "text", ["/imagine@other_bot a fox", "hello /imagine", "", None, "/", "/imaginefox@"]
)
def test_other_bots_commands_and_plain_text_are_not_ours(text: str | None) -> None:
    assert parse_command(text, "emu_bot") is None


def test_a_caption_command_is_read_and_the_largest_photo_chosen() -> None:
    message = _message(PHOTO_MESSAGE)
    assert command_of(message, "emu_bot") == Command("remix", "make it blue")
    assert [a.ref for a in find_inputs(message)] == ["big"]


def test_a_reply_to_a_photo_supplies_the_image() -> None:
    data = {
        "message_id": 2,
        "from": ALICE,
        "chat": GROUP,
        "date": 1795718491,
        "text": "/animate",
        "reply_to_message": copy.deepcopy(PHOTO_MESSAGE),
    }
    assert [a.ref for a in find_inputs(_message(data))] == ["big"]


def test_an_image_document_is_accepted() -> None:
    document = {"file_id": "doc", "file_unique_id": "d", "mime_type": "image/png", "file_size": 5}
    data = {"message_id": 3, "from": ALICE, "chat": GROUP, "date": 1, "document": document}
    assert [(a.ref, a.video) for a in find_inputs(_message(data))] == [("doc", False)]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            {
                "document": {
                    "file_id": "d",
                    "file_unique_id": "d",
                    "file_name": "notes.pdf",
                    "mime_type": "application/pdf",
                }
            },
            "notes.pdf is not an image",
        ),
        (
            {
                "sticker": {
                    "file_id": "s",
                    "file_unique_id": "s",
                    "type": "regular",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                }
            },
            "Stickers can't be used",
        ),
        (
            {
                "document": {
                    "file_id": "d",
                    "file_unique_id": "d",
                    "mime_type": "image/png",
                    "file_size": DOWNLOAD_LIMIT + 1,
                }
            },
            "up to 20 MB",
        ),
    ],
)
def test_unusable_attachments_say_what_to_send(content: dict[str, Any], needle: str) -> None:
    data = {"message_id": 4, "from": ALICE, "chat": GROUP, "date": 1, **content}
    with pytest.raises(InvalidImage, match=needle):
        find_inputs(_message(data))


def test_a_message_without_an_image_has_none() -> None:
    data = {"message_id": 5, "from": ALICE, "chat": GROUP, "date": 1, "text": "/remix x"}
    assert find_inputs(_message(data)) == []


VIDEO = {"file_id": "vid", "file_unique_id": "v", "width": 128, "height": 72, "duration": 1}


@pytest.mark.parametrize(
    "content",
    [
        {"video": {**VIDEO, "mime_type": "video/mp4", "file_size": 9}},
        # An animation (a GIF) also sets ``document``, for backward compatibility.
        {"animation": {**VIDEO, "mime_type": "video/mp4"}, "document": {**VIDEO}},
        {"document": {**VIDEO, "mime_type": "video/webm", "file_name": "clip.webm"}},
    ],
)
def test_a_video_an_animation_or_a_video_file_is_a_clip(content: dict[str, Any]) -> None:
    data = {"message_id": 6, "from": ALICE, "chat": GROUP, "date": 1, **content}
    assert [(a.ref, a.video) for a in find_inputs(_message(data))] == [("vid", True)]


def test_a_clip_over_the_download_limit_is_refused_before_the_download() -> None:
    video = {**VIDEO, "mime_type": "video/mp4", "file_size": DOWNLOAD_LIMIT + 1}
    data = {"message_id": 7, "from": ALICE, "chat": GROUP, "date": 1, "video": video}
    with pytest.raises(InvalidVideo, match="limit"):
        find_inputs(_message(data))


def test_an_album_gives_every_part_in_order_and_a_reply_its_album() -> None:
    parts = [_message({**PHOTO_MESSAGE, "message_id": n, "media_group_id": "g"}) for n in (1, 2)]
    assert [a.ref for a in find_inputs(parts[0], parts)] == ["big", "big"]
    reply = {"message_id": 3, "from": ALICE, "chat": GROUP, "date": 1, "text": "/blend"}
    reply["reply_to_message"] = {**PHOTO_MESSAGE, "media_group_id": "g"}
    assert len(find_inputs(_message(reply), None, parts)) == 2


@pytest.mark.parametrize("prompt", ["🦊🦊🦊", "!!! ...", "✨ 🌈"])
def test_prompts_without_words_are_refused(prompt: str) -> None:
    with pytest.raises(InvalidPrompt, match="in words"):
        check_prompt_text(prompt)


@pytest.mark.parametrize("prompt", ["a red fox", "лиса в снегу", "雪の中の狐 🦊", "", "2 cats"])
def test_prompts_with_words_in_any_script_pass(prompt: str) -> None:
    check_prompt_text(prompt)
