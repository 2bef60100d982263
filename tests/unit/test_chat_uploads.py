"""Which uploaded file is which input (``reelbot.chat.uploads``): by type, order and command."""

from __future__ import annotations

import re

import pytest

from reelbot.catalog import Task
from reelbot.chat.uploads import MAX_FILE_BYTES, Inputs, Upload, oversized, sort_uploads
from reelbot.errors import InvalidImage, InvalidVideo, MissingImage

A, B, C, D, E = (Upload(bytes([n]) * 8, "image/png", f"{n}.png") for n in range(5))
CLIP = Upload(b"clip" * 4, "video/mp4", "in.mp4")
GIF = Upload(b"GIF89a" * 2, "image/gif", "in.gif")


def test_the_second_image_is_the_mask_or_the_last_frame_and_blend_takes_four() -> None:
    assert sort_uploads(Task.REMIX, [A]) == Inputs(image=A.data)
    assert sort_uploads(Task.REMIX, [A, B]) == Inputs(image=A.data, mask=B.data)
    assert sort_uploads(Task.REMIX, [A], B) == Inputs(image=A.data, mask=B.data)
    assert sort_uploads(Task.ANIMATE, [A, B]) == Inputs(image=A.data, images=(B.data,))
    assert sort_uploads(Task.BLEND, [A, B, C, D]) == Inputs(
        image=A.data, images=(B.data, C.data, D.data)
    )
    assert sort_uploads(Task.IMAGINE, []) == Inputs()


def test_a_clip_comes_alone_and_a_gif_is_one_where_the_command_takes_a_clip() -> None:
    assert sort_uploads(Task.RESTYLE, [CLIP]) == Inputs(video=CLIP.data)
    assert sort_uploads(Task.SMOOTH, [GIF]) == Inputs(video=GIF.data)
    assert sort_uploads(Task.ANIMATE, [CLIP]) == Inputs(video=CLIP.data)  # Extend a clip
    assert sort_uploads(Task.REMIX, [GIF]) == Inputs(image=GIF.data)  # a GIF as a picture
    unknown = Upload(b"x", "application/octet-stream")
    assert sort_uploads(Task.RESTYLE, [unknown]) == Inputs(video=b"x")  # the probe decides


@pytest.mark.parametrize(
    ("task", "files", "mask", "error", "words"),
    [
        (Task.IMAGINE, [CLIP], None, InvalidVideo, "/imagine takes no video"),
        (Task.RESTYLE, [A], None, InvalidVideo, "not a video (image/png)"),
        (Task.RESTYLE, [CLIP, A], None, InvalidVideo, "one clip and nothing else"),
        (Task.IMAGINE, [A], None, InvalidImage, "/imagine takes no image"),
        (Task.REMIX, [A, B, C], None, InvalidImage, "second, a mask"),
        (Task.REMIX, [A, B], C, InvalidImage, "second, a mask"),
        (Task.ANIMATE, [A, B, C], None, InvalidImage, "a first and a last frame"),
        (Task.UPSCALE, [A], B, InvalidImage, "A mask goes with /remix"),
        (Task.UPSCALE, [A, B], None, MissingImage, "/upscale takes one image"),
        (Task.BLEND, [A], None, MissingImage, "2 to 4 images"),
        (Task.BLEND, [A, B, C, D, E], None, InvalidImage, "at most 4 files"),
        (Task.REMIX, [Upload(b"x", "text/plain")], None, InvalidImage, "not an image"),
    ],
)
def test_what_does_not_fit_is_refused_in_a_sentence(
    task: Task, files: list[Upload], mask: Upload | None, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        sort_uploads(task, files, mask)


def test_each_kind_has_its_own_byte_limit_in_words() -> None:
    assert oversized("image/png", MAX_FILE_BYTES) is None
    assert "image is 21 MB, over the 20 MB limit" in (oversized("image/png", 21 << 20) or "")
    assert "video is 21 MB, over the 20 MB limit" in (oversized("video/mp4", 21 << 20) or "")
