"""Which accelerator a worker runs on, the dtype it computes in, and freeing its memory."""

from __future__ import annotations

import gc

import torch

from reelbot.errors import ConfigError

__all__ = ["compute_dtype", "free_memory", "generator_device", "memory_total", "pick_device"]

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def pick_device(requested: str = "auto") -> str:
    """Resolve ``auto`` to cuda, then mps, then cpu; check an explicit choice exists."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":", 1)[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"REELBOT_DEVICE={requested}: CUDA is not available here")
        index = torch.device(requested).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                f"REELBOT_DEVICE={requested}: only {torch.cuda.device_count()} CUDA device(s)"
            )
        return requested
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"REELBOT_DEVICE={requested}: MPS is not available here")
        return requested
    if kind == "cpu":
        return "cpu"
    raise ConfigError(f"REELBOT_DEVICE={requested}: use auto, cpu, cuda, cuda:N or mps")


def compute_dtype(device: str, spec_dtype: str) -> torch.dtype:
    """The spec's dtype on an accelerator; float32 on the CPU, where bf16 and fp16 are slow."""
    try:
        wanted = _DTYPES[spec_dtype]
    except KeyError:
        raise ConfigError(
            f"REELBOT_MODELS: dtype {spec_dtype!r} is not one of {', '.join(_DTYPES)}"
        ) from None
    return torch.float32 if device == "cpu" else wanted


def generator_device(device: str) -> str:
    """Where a seeded torch.Generator lives: on the device, except MPS (seeded on the CPU)."""
    # diffusers documents CPU generators for MPS: MPS generators are not reproducible.
    return "cpu" if device.startswith("mps") else device


def memory_total(device: str) -> int | None:
    """Bytes of memory on an accelerator, or None for the CPU (no budget by default)."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return None


def free_memory(device: str) -> None:
    """Return cached blocks to the driver after models were dropped."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device.startswith("mps"):
        torch.mps.empty_cache()
