"""A model's weight bytes once loaded, read from its files before anything is loaded.

The runner makes room for a model before it reads it in (loading first and evicting after
held both in host memory at once). The size comes from the safetensors headers of the files
``from_pretrained`` will read: each tensor's shape, counted in the dtype it will be loaded in.
Reading a header is a few kilobytes per file, so this costs milliseconds even for 20 GB.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import torch

from reelbot.catalog import ModelSpec
from reelbot.generation import load_errors
from reelbot.generation.registry import model_source

__all__ = ["folder_bytes", "weight_bytes"]

log = logging.getLogger(__name__)

# safetensors dtype names (the format's spec) → bytes per element; float ones are cast on load.
_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
# A header bigger than this is not a safetensors file (the format caps it at 100 MB).
_MAX_HEADER = 100 * 2**20


def _header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > _MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors file")
        found: dict[str, dict[str, object]] = json.loads(f.read(length))
    found.pop("__metadata__", None)
    return found


def _weight_files(folder: Path) -> Iterator[Path]:
    """The safetensors files ``from_pretrained`` reads without a ``variant``.

    A variant's files carry it after a dot (``model.fp16.safetensors``,
    ``diffusion_pytorch_model.fp16-00001-of-00002.safetensors``); plain and sharded files
    have none in their stem. A folder holding only variant files counts those.
    """
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if "." not in f.name.removesuffix(".safetensors")]
    yield from plain or files


def _tensor_bytes(path: Path, float_size: int) -> int:
    total = 0
    for entry in _header(path).values():
        dtype = str(entry["dtype"])
        shape = cast(list[int], entry["shape"])
        size = float_size if dtype in _FLOATS else _SIZES.get(dtype, 1)
        total += math.prod(shape) * size
    return total


def folder_bytes(
    folder: Path,
    dtype: torch.dtype,
    component_dtypes: Mapping[str, torch.dtype] | None = None,
) -> int:
    """Bytes of the weights in a diffusers folder (or one model's folder) loaded in ``dtype``.

    ``component_dtypes`` overrides ``dtype`` per component subfolder, as ``load_model`` does.
    """
    overrides = component_dtypes or {}
    index = folder / "model_index.json"
    if index.is_file():
        names = [k for k, v in json.loads(index.read_text("utf-8")).items() if isinstance(v, list)]
        parts = [(folder / name, overrides.get(name, dtype)) for name in names]
    else:
        parts = [(folder, dtype)]
    total = 0
    for part, part_dtype in parts:
        size = torch.empty((), dtype=part_dtype).element_size()
        total += sum(_tensor_bytes(path, size) for path in _weight_files(part))
    return total


def _snapshot(repo: Path) -> Path | None:
    """The hub cache's snapshot of ``refs/main`` (what an offline load resolves), if cached."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text("utf-8").strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def weight_bytes(
    spec: ModelSpec,
    *,
    data_dir: Path,
    dtype: torch.dtype,
    component_dtypes: Mapping[str, torch.dtype] | None = None,
) -> int | None:
    """What ``load_model`` will hold for ``spec``, from its files; None when they are not here.

    None for a hub model not downloaded yet (its size is known only once it is) or files
    that cannot be read: the caller then sizes it after loading, as before.
    """
    source, from_hub = model_source(spec, data_dir)
    folder: Path | None = Path(source)
    if from_hub:
        folder = _snapshot(load_errors.hub_folder(data_dir / "hub", source))
    if folder is None:
        return None
    try:
        return folder_bytes(folder, dtype, component_dtypes) or None
    except (OSError, ValueError, KeyError, struct.error) as exc:
        # Debug, not a warning: the load that follows fails in one line of its own (a damaged
        # download), or succeeds and is sized then.
        log.debug("cannot size %s from its files (%s); sizing it once loaded", spec.name, exc)
        return None
