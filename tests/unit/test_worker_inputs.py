"""How the worker decodes a clip it is to smooth or extend: all of it, at its own rate."""

from __future__ import annotations

import io

from PIL import Image

from reelbot.catalog import Task, load_catalog
from reelbot.config import Settings
from reelbot.jobs import resolve
from reelbot.worker.inputs import _clip


def test_a_gif_keeps_every_frame_though_its_rate_is_rounded() -> None:
    # 0.12 s a frame reads as 8.33 fps: 0.6 s of it must still be all 5 frames, not 4.
    frames = [Image.new("RGB", (64, 48), (i * 40, 90, 160)) for i in range(5)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    params = resolve(Task.SMOOTH, "", load_catalog("tiny"), has_video=True, image_size=(64, 48))
    decoded, fps, _ = _clip(buf.getvalue(), params, Settings(models="tiny"))
    assert len(decoded) == 5 and round(fps, 2) == 8.33
    assert decoded[0].size == (64, 48)
