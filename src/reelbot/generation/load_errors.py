"""Why a model failed to load, in one sentence that names the model and what to do.

``from_pretrained`` reports a missing download, a gated repository or a damaged file as an
``OSError`` wrapped around the hub's own error; ``explain`` walks that chain and picks the
``ReelbotError`` (``ModelUnavailable`` or ``OutOfMemory``), or ``None`` for anything else (a bug,
left to the caller's handler).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from safetensors import SafetensorError

from reelbot.catalog import ModelSpec
from reelbot.errors import ModelUnavailable, OutOfMemory, ReelbotError

__all__ = ["explain", "hub_folder", "out_of_memory"]

# diffusers' own wording, the only trace its wrappers keep of a damaged file or config.
_BROKEN_WORDS = ("Unable to load weights from checkpoint file", "is not a valid JSON file")
_NOT_CACHED_WORDS = ("not fully cached locally",)
_HOST_OOM_WORDS = ("can't allocate memory",)
_SETS = "REELBOT_MODELS=tiny to try reelbot, or a smaller model set of your own"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        yield found
        found = found.__cause__ or found.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) if isinstance(exc, HfHubHTTPError) else None
    return getattr(response, "status_code", None)


def hub_folder(cache_dir: Path, repo_id: str) -> Path:
    """Where the hub cache keeps ``repo_id`` under ``cache_dir`` (huggingface_hub's layout)."""
    return cache_dir / f"models--{repo_id.replace('/', '--')}"


def out_of_memory(spec: ModelSpec, device: str) -> OutOfMemory:
    """Not enough memory on ``device`` (``cpu``: the host's) to hold the model's weights."""
    where = "host" if device == "cpu" else f"{device} GPU"
    return OutOfMemory(
        f"There is not enough {where} memory to load model {spec.name} ({spec.source}): "
        f"free some, or use {_SETS}."
    )


def explain(
    spec: ModelSpec, exc: BaseException, *, folder: Path, device: str = "cpu"
) -> ReelbotError | None:
    """The one-sentence error for a load that raised ``exc``; ``folder`` holds its files."""
    chain = list(_chain(exc))
    model = f"{spec.name} ({spec.source})"
    if any(isinstance(e, GatedRepoError) or _status(e) in (401, 403) for e in chain):
        return ModelUnavailable(
            f"Model {model} is gated on the Hugging Face hub: accept its licence at "
            f"https://huggingface.co/{spec.source} and set HF_TOKEN to a token of that "
            f"account, or use {_SETS}.",
            model=spec.name,
            reason="gated",
        )
    if any(
        isinstance(e, torch.OutOfMemoryError | MemoryError)
        or any(w in str(e) for w in _HOST_OOM_WORDS)
        for e in chain
    ):
        return out_of_memory(spec, device)
    if any(
        isinstance(e, SafetensorError | json.JSONDecodeError)
        or any(w in str(e) for w in _BROKEN_WORDS)
        for e in chain
    ):
        fix = (
            "delete that folder so they download again"
            if folder.name.startswith("models--")
            else "copy them there again"
        )
        return ModelUnavailable(
            f"Model {model} has damaged files in {folder} (an interrupted download?): {fix}, "
            f"or use {_SETS}.",
            model=spec.name,
            reason="broken",
        )
    if any(
        isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled)
        or any(w in str(e) for w in _NOT_CACHED_WORDS)
        for e in chain
    ):
        return ModelUnavailable(
            f"Model {model} is not downloaded and the Hugging Face hub cannot be reached: "
            f"connect this machine once (without HF_HUB_OFFLINE) so it downloads into "
            f"{folder.parent}, or use {_SETS}.",
            model=spec.name,
            reason="not_cached",
        )
    return None
