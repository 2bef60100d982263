"""chat/attachments.py: which named file is which input, and the checks before downloading."""

from __future__ import annotations

import pytest

from reelbot.catalog import Task
from reelbot.chat.attachments import Inputs, check_declared_file, has, task_for
from reelbot.errors import InvalidImage, InvalidVideo


@pytest.mark.parametrize(
    ("name", "ctype", "size", "error", "needle"),
    [
        ("image", "text/plain", 10, InvalidImage, "not an image"),
        ("image", "image/png", 11 * 1024 * 1024, InvalidImage, "under 10 MB"),
        ("mask", "video/mp4", 10, InvalidImage, "not an image"),
        ("image2", "image/png", 11 * 1024 * 1024, InvalidImage, "over the 10 MB"),
        ("video", "image/png", 10, InvalidVideo, "not a video"),
        ("video", "video/mp4", 30 * 1024 * 1024, InvalidVideo, "over the 20 MB"),
    ],
)
def test_a_file_is_refused_from_what_is_declared(
    name: str, ctype: str, size: int, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        check_declared_file(name, size, ctype, max_bytes=10 * 1024 * 1024)


def test_what_each_kind_accepts() -> None:
    check_declared_file("image", 10, "image/png", max_bytes=1 << 20)
    check_declared_file("video", 10, "video/mp4")
    check_declared_file("video", 10, "image/gif")  # an animation is a clip
    # A clip is bounded by the video limits, not by the platform's upload limit on images.
    check_declared_file("video", 15 * 1024 * 1024, "video/webm", max_bytes=1 << 20)


def test_names_sort_into_inputs_and_tasks() -> None:
    files = {"image4": b"4", "image": b"1", "image2": b"2", "mask": b"m", "video": b"v"}
    inputs = Inputs.named(files)
    assert (inputs.image, inputs.video, inputs.mask) == (b"1", b"v", b"m")
    assert inputs.images == (b"2", b"4")  # in the option order, whatever the platform's
    assert inputs.as_kwargs(source_id="s")["source_id"] == "s"
    assert Inputs.named({"last_image": b"l"}).images == (b"l",)
    with pytest.raises(ValueError, match="thumbnail"):
        Inputs.named({"thumbnail": b""})
    assert task_for(Task.REMIX, {"image", "mask"}) == Task.INPAINT
    assert task_for(Task.REMIX, {"image"}) == Task.REMIX
    assert task_for(Task.ANIMATE, {"image", "last_image"}) == Task.KEYFRAMES
    assert task_for(Task.BLEND, {"image", "image2"}) == Task.BLEND
    assert has({"video"}) == {"has_image": False, "has_video": True}
    assert has({"image", "mask"}) == {"has_image": True, "has_video": False}
