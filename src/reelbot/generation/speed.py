"""A model's speed options, applied once to its denoiser on load: fp8, step caching, attention.

``quantize = "fp8"`` stores the denoiser's weights in float8: torchao's dynamic float8 matmuls on
a GPU that has fp8 tensor cores (compute capability 8.9, Ada and Hopper, and later) when torchao
imports, else diffusers' layerwise casting (weights stored in ``float8_e4m3fn``, each layer
upcast to the compute dtype while it runs: half the memory, not faster). ``cache`` puts one of
diffusers' cache hooks on the denoiser (first block, MagCache, TaylorSeer), which skips or
predicts the work of steps that change little. Both change the output, so both are off unless
the model's TOML asks. The attention backend is probed (flash-attn 3 on Hopper, flash-attn 2,
SageAttention, else torch's SDPA) unless ``REELBOT_ATTENTION_BACKEND`` names one.

``check_speed`` runs at start-up (no weights needed); ``apply_speed`` from the runner's tune
step, before compiling, once per distinct denoiser.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import diffusers
import diffusers.hooks
import torch

from reelbot.catalog import ModelSpec
from reelbot.errors import ConfigError
from reelbot.generation.device import compute_dtype
from reelbot.generation.gpu import set_attention_backend

__all__ = [
    "CACHE_CONFIGS",
    "FP8_MIN_CAPABILITY",
    "MASKED_FAMILIES",
    "Applied",
    "apply_speed",
    "cache_config",
    "check_speed",
    "probe_attention",
    "quantize_fp8",
    "reset_cache",
]

log = logging.getLogger(__name__)

# fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards; torchao's float8 matmuls need them.
FP8_MIN_CAPABILITY = (8, 9)

CACHE_CONFIGS = {
    "first_block": "FirstBlockCacheConfig",
    "mag": "MagCacheConfig",
    "taylorseer": "TaylorSeerCacheConfig",
}
"""``cache`` in the model TOML → the diffusers hook config class it builds."""

# Found with the tiny models on diffusers 0.42.1: FLUX.2's first-block cache fails in the first
# step (its blocks return the two streams in an order the hook does not subtract).
_BROKEN: dict[tuple[str, str], str] = {
    ("flux2_klein", "first_block"): "diffusers' first-block cache fails on FLUX.2's blocks",
}


# Families whose denoisers pass an attention mask (LTX's text mask, Z-Image's padded
# captions): diffusers' flash-attn 2 and 3 and SageAttention backends raise on any mask, at the
# first call rather than when the backend is set, so the probe leaves these on SDPA.
MASKED_FAMILIES = frozenset({"ltx", "zimage"})

# Cache hooks whose decisions are data-dependent Python (TaylorSeer's schedule is not).
_EAGER_CACHES = frozenset({"first_block", "mag"})


@dataclass(frozen=True)
class Applied:
    """What ``apply_speed`` did to one denoiser (for the log and the benchmark)."""

    quantize: str | None = None
    """``torchao-float8``, ``layerwise-fp8`` or None."""
    cache: str | None = None
    attention: str = "native"

    @property
    def eager_because(self) -> str | None:
        """Why the denoiser must not be compiled with these options, or None when it may be."""
        # Found on the tiny Wan with compile_repeated_blocks(fullgraph=True), torch 2.13:
        # the hooks make a graph break, which fullgraph turns into an error at the first call.
        if self.quantize == "layerwise-fp8":
            return "layerwise fp8 casting creates Parameters inside the graph"
        if self.cache in _EAGER_CACHES:
            return f"the {self.cache} cache hook breaks the compiled graph"
        return None


def _transformer_class(pipeline: str) -> type | None:
    """The denoiser class a pipeline's constructor declares, without loading weights."""
    cls = getattr(diffusers, pipeline, None)
    if cls is None:
        return None
    param = inspect.signature(cls.__init__).parameters.get("transformer")
    if param is None:
        return None
    hint = param.annotation
    if isinstance(hint, type):
        return hint
    # ``WanTransformer3DModel | None`` (Wan's second expert is optional).
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and a is not type(None)]
        return found[0] if found else None
    return None


def check_speed(specs: Iterable[ModelSpec]) -> None:
    """Refuse, at start-up, speed options this diffusers cannot apply to a model's pipelines."""
    for spec in specs:
        if spec.cache is None:
            continue
        kind = spec.cache
        config = CACHE_CONFIGS[kind]
        if not hasattr(diffusers.hooks, config):
            raise ConfigError(
                f"REELBOT_MODELS: model {spec.name}: cache = {kind} needs diffusers' {config}, "
                f"which diffusers {diffusers.__version__} lacks; upgrade diffusers or drop cache"
            )
        broken = _BROKEN.get((spec.family, kind))
        if broken is not None:
            raise ConfigError(f"REELBOT_MODELS: model {spec.name}: cache = {kind}: {broken}")
        for pipeline in sorted(set(spec.pipelines.values())):
            denoiser = _transformer_class(pipeline)
            if denoiser is not None and not hasattr(denoiser, "enable_cache"):
                raise ConfigError(
                    f"REELBOT_MODELS: model {spec.name}: cache = {kind}: {denoiser.__name__} "
                    f"({pipeline}) takes no diffusers cache hooks; drop cache for this model"
                )


def cache_config(spec: ModelSpec) -> Any:
    """The diffusers cache hook config for ``spec.cache``, from its TOML settings."""
    hooks: Any = diffusers.hooks  # the config classes are not in its __all__
    extra: dict[str, Any] = {}
    if spec.cache_threshold is not None:
        extra["threshold"] = spec.cache_threshold
    if spec.cache == "first_block":
        return hooks.FirstBlockCacheConfig(**extra)
    if spec.cache == "mag":
        ratios = list(spec.cache_mag_ratios or ())
        # diffusers interpolates the ratios to the steps of each call (num_inference_steps).
        return hooks.MagCacheConfig(mag_ratios=ratios, num_inference_steps=len(ratios), **extra)
    if spec.cache == "taylorseer":
        if spec.cache_interval is not None:
            extra["cache_interval"] = spec.cache_interval
        # Factors in float32: bf16 Taylor factors lose the small step-to-step differences.
        return hooks.TaylorSeerCacheConfig(taylor_factors_dtype=torch.float32, **extra)
    raise ConfigError(f"REELBOT_MODELS: model {spec.name}: unknown cache {spec.cache!r}")


def _block_count(transformer: Any) -> int:
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    return sum(1 for m in transformer.modules() if type(m).__name__ in names)


def _enable_cache(spec: ModelSpec, transformer: Any) -> str:
    if not hasattr(transformer, "enable_cache"):
        raise ConfigError(
            f"REELBOT_MODELS: model {spec.name}: {type(transformer).__name__} takes no cache hooks"
        )
    if spec.cache == "first_block" and _block_count(transformer) < 2:
        # The hook computes the first block and decides from it whether to run the rest.
        raise ConfigError(
            f"REELBOT_MODELS: model {spec.name}: cache = first_block needs two or more blocks"
        )
    transformer.enable_cache(cache_config(spec))
    return str(spec.cache)


def _torchao_float8() -> Any | None:
    """torchao's dynamic float8 config (per-row scales), or None where torchao is missing."""
    try:
        from torchao.quantization import (  # type: ignore[import-not-found, unused-ignore]
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
        )
    except ImportError:
        return None
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def _has_fp8_cores(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    return torch.cuda.get_device_capability(torch.device(device)) >= FP8_MIN_CAPABILITY


def quantize_fp8(transformer: Any, device: str, compute: torch.dtype) -> str:
    """Store ``transformer``'s weights in float8 (torchao where it can run, else layerwise).

    ``compute``: the dtype layers are upcast to while they run (the model's compute dtype).
    """
    if _has_fp8_cores(device):
        config = _torchao_float8()
        if config is not None:
            from torchao.quantization import quantize_  # type: ignore[import-not-found, unused-ignore]

            quantize_(transformer, config)
            return "torchao-float8"
        log.warning("torchao is not installed: fp8 by layerwise casting (memory, not speed)")
    # Norms and embeddings stay in the compute dtype (each model's _skip_layerwise_casting_*).
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    return "layerwise-fp8"


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def probe_attention(device: str, family: str = "") -> str | None:
    """The fastest attention backend installed for this GPU, or None for torch's SDPA."""
    if not device.startswith("cuda") or family in MASKED_FAMILIES:
        return None
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    if major == 9 and _importable("flash_attn_interface"):
        return "_flash_3"  # flash-attn 3 is built for Hopper only
    if major >= 8 and _importable("flash_attn"):
        return "flash"
    if major >= 8 and _importable("sageattention"):
        return "sage"
    return None


def reset_cache(pipe: Any) -> None:
    """Start a pipeline call with fresh cache-hook state.

    diffusers resets the hooks at the end of a call that finishes; a call stopped by a cancel
    leaves them mid-schedule, and MagCache then skips by the old job's step count.
    """
    transformer: Any = getattr(pipe, "transformer", None)
    if getattr(transformer, "is_cache_enabled", False):
        transformer._reset_stateful_cache()


def apply_speed(pipe: Any, spec: ModelSpec, *, device: str, attention: str | None) -> Applied:
    """Apply ``spec``'s speed options and the attention backend to ``pipe``'s denoiser.

    ``attention``: the backend ``REELBOT_ATTENTION_BACKEND`` forces, or None to probe.
    """
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        return Applied()
    compute = compute_dtype(device, spec.dtype)
    quantized = quantize_fp8(transformer, device, compute) if spec.quantize == "fp8" else None
    cached = _enable_cache(spec, transformer) if spec.cache is not None else None
    backend = attention if attention is not None else probe_attention(device, spec.family)
    if backend is not None and not set_attention_backend(pipe, backend):
        backend = None
    applied = Applied(quantize=quantized, cache=cached, attention=backend or "native")
    if quantized or cached or backend:
        log.info(
            "%s: fp8 %s, cache %s, attention %s",
            spec.name,
            applied.quantize or "off",
            applied.cache or "off",
            applied.attention,
        )
    return applied
