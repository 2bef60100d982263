"""The generation runner: one blocking call turns resolved parameters into PIL frames.

The queue worker calls ``Runner.generate`` through ``asyncio.to_thread``. Calls are serialised by
a lock (diffusers pipelines share scheduler state and are not safe to call concurrently);
pipelines stay resident in one LRU cache under a memory budget; progress and cancellation go
through diffusers' ``callback_on_step_end``, once per denoising step.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from reelbot.catalog import Catalog, ModelSpec, Task
from reelbot.errors import Cancelled, ConfigError, MissingImage, OutOfMemory
from reelbot.generation.device import (
    compute_dtype,
    free_memory,
    generator_device,
    memory_total,
    pick_device,
)
from reelbot.generation.registry import LoadedModel, family_of, load_model
from reelbot.jobs import GenerationParams

__all__ = ["GenerationOutput", "Progress", "ProgressCallback", "Runner", "fit_image"]

log = logging.getLogger(__name__)

Stage = Literal["loading", "denoising", "decoding"]

# Without an explicit budget, leave a fifth of the accelerator for activations and the VAE.
DEFAULT_BUDGET_FRACTION = 0.8
PREVIEW_MAX_SIDE = 128


@dataclass(frozen=True)
class Progress:
    """One progress event: steps done (1-based) of the total, and the stage."""

    step: int
    total: int
    stage: Stage
    preview: Image.Image | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass
class GenerationOutput:
    """The frames of one generation (one for an image), with what reproduces and times it."""

    frames: list[Image.Image]
    fps: int | None
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """An input image turned upright, RGB, centre-cropped to the aspect and resized to size."""
    upright = ImageOps.exif_transpose(image).convert("RGB")
    if upright.size == (width, height):
        return upright
    return ImageOps.fit(upright, (width, height), method=Image.Resampling.LANCZOS)


@cache
def _projection(channels: int) -> torch.Tensor:
    """A fixed channels→RGB map, the same on every call, so previews look alike step to step."""
    weights = torch.randn(3, channels, generator=torch.Generator().manual_seed(0))
    return weights.div_(channels**0.5)


def latent_preview(latents: torch.Tensor) -> Image.Image | None:
    """A cheap RGB preview of spatial latents (B, C, H, W) or (B, C, F, H, W); None otherwise."""
    if latents.ndim == 5:
        grid = latents[0, :, 0]  # the first frame
    elif latents.ndim == 4:
        grid = latents[0]
    else:
        # Packed token sequences (FLUX.2, LTX) have a family-specific layout: no preview.
        return None
    x = grid.detach().to("cpu", torch.float32)
    rgb = torch.einsum("kc,chw->hwk", _projection(x.shape[0]), x)
    low, high = rgb.amin(), rgb.amax()
    rgb = (rgb - low) / (high - low + 1e-6)
    image = Image.fromarray((rgb * 255).round().to(torch.uint8).numpy(), "RGB")
    scale = max(1, PREVIEW_MAX_SIDE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _to_pil(frame: Any) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class Runner:
    """Runs generations on one device, keeping recently used pipelines resident."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        data_dir: Path,
        device: str = "auto",
        memory_budget_bytes: int | None = None,
        preview_every: int = 4,
    ) -> None:
        """Pick the device; no model loads until ``preload`` or ``generate``.

        ``memory_budget_bytes`` bounds the resident weights (default: 80 % of an accelerator's
        memory, unbounded on the CPU). ``preview_every`` sets how often, in steps, a progress
        event carries a preview image (0: never).
        """
        self.catalog = catalog
        self.data_dir = Path(data_dir)
        self._device = pick_device(device)
        if memory_budget_bytes is None:
            total = memory_total(self._device)
            memory_budget_bytes = int(total * DEFAULT_BUDGET_FRACTION) if total else None
        self.memory_budget_bytes = memory_budget_bytes
        self.preview_every = preview_every
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()

    @property
    def device(self) -> str:
        """The resolved device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
        return self._device

    @property
    def resident(self) -> list[str]:
        """Names of the models in memory, least recently used first."""
        return list(self._cache)

    def loaded(self, model: str) -> LoadedModel | None:
        """The resident model called ``model``, if any (for inspection and tests)."""
        return self._cache.get(model)

    def preload(self, model: str, task: Task | None = None) -> None:
        """Load a model (and its pipeline for ``task``, or for all its tasks) ahead of jobs."""
        spec = self.catalog.get(model)
        with self._lock:
            try:
                loaded, _ = self._load(spec)
                for each in (task,) if task is not None else spec.tasks:
                    loaded.pipeline(each)
                return
            except torch.OutOfMemoryError as exc:
                detail = _first_line(exc)
            free_memory(self._device)
            raise OutOfMemory(f"loading {model} on {self._device}: {detail}")

    def unload(self, model: str | None = None) -> None:
        """Drop one model, or all of them, from memory."""
        with self._lock:
            names = [model] if model is not None else list(self._cache)
            for name in names:
                entry = self._cache.pop(name, None)
                if entry is not None:
                    entry.release()
            free_memory(self._device)

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationOutput:
        """Run one generation, blocking; raises ``Cancelled`` or ``OutOfMemory`` as they occur.

        ``on_progress`` is called from this thread: once with stage "loading" when the model
        is not resident, once per denoising step, and once with stage "decoding". Setting
        ``cancel`` stops the run at the end of the current step.
        """
        spec = self.catalog.pick(params.task, params.model)
        if params.task.needs_image and image is None:
            raise MissingImage(f"/{params.task.value} needs an input image.")
        _check_cancel(cancel)
        with self._lock:
            # The job may have been cancelled while an earlier one held the lock.
            _check_cancel(cancel)
            failure: type[Cancelled] | str | None = None
            try:
                return self._generate(spec, params, image, on_progress, cancel)
            except Cancelled:
                failure = Cancelled
            except torch.OutOfMemoryError as exc:
                failure = _first_line(exc)
            # Raised outside the except blocks: the caught traceback holds the step's tensors,
            # and accelerator memory is only freed once it is gone.
            free_memory(self._device)
            if failure is Cancelled:
                raise Cancelled()
            raise OutOfMemory(f"{params.model} on {self._device}: {failure}")

    # -- internals --------------------------------------------------------------------------

    def _load(self, spec: ModelSpec) -> tuple[LoadedModel, float]:
        """The resident model for ``spec`` (marked most recent), loading it if needed."""
        cached = self._cache.get(spec.name)
        if cached is not None:
            self._cache.move_to_end(spec.name)
            return cached, 0.0
        start = perf_counter()
        loaded = load_model(
            spec, data_dir=self.data_dir, dtype=compute_dtype(self._device, spec.dtype)
        )
        need = loaded.nbytes
        self._evict_for(need)
        budget = self.memory_budget_bytes
        try:
            if budget is not None and need > budget and self._device.startswith("cuda"):
                log.warning(
                    "%s needs ~%.1f GiB, over the %.1f GiB budget: offloading to the CPU",
                    spec.name,
                    need / 2**30,
                    budget / 2**30,
                )
                loaded.offload(self._device)
            else:
                loaded.to(self._device)
        except torch.OutOfMemoryError:
            loaded.release()
            free_memory(self._device)
            raise
        self._cache[spec.name] = loaded
        return loaded, perf_counter() - start

    def _evict_for(self, need: int) -> None:
        """Drop least recently used models until ``need`` more bytes fit the budget."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        evicted = False
        while self._cache and sum(m.nbytes for m in self._cache.values()) + need > budget:
            name, old = self._cache.popitem(last=False)
            log.info("evicting %s to stay under the memory budget", name)
            old.release()
            evicted = True
        if evicted:
            free_memory(self._device)

    def _call_kwargs(
        self, spec: ModelSpec, pipe: Any, params: GenerationParams, image: Image.Image | None
    ) -> dict[str, Any]:
        accepted = inspect.signature(pipe.__call__).parameters
        family = family_of(spec)
        kwargs: dict[str, Any] = {
            "prompt": params.prompt,
            "height": params.height,
            "width": params.width,
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance,
            "generator": torch.Generator(generator_device(self._device)).manual_seed(params.seed),
            "output_type": "pil",
        }

        def require(name: str, what: str) -> None:
            if name not in accepted:
                raise ConfigError(
                    f"REELBOT_MODELS: model {spec.name} declares {what}, but "
                    f"{type(pipe).__name__} takes no {name!r}"
                )

        if params.negative_prompt and spec.supports_negative:
            require("negative_prompt", "supports_negative")
            kwargs["negative_prompt"] = params.negative_prompt
        if params.task.needs_image:
            assert image is not None  # checked in generate
            fitted = fit_image(image, params.width, params.height)
            short = min(fitted.size)
            if short < family.image_min_side:
                scale = family.image_min_side / short
                size = (round(fitted.width * scale), round(fitted.height * scale))
                fitted = fitted.resize(size, Image.Resampling.LANCZOS)
            kwargs["image"] = fitted
        if params.strength is not None:
            require("strength", "strength_default")
            kwargs["strength"] = params.strength
        if params.task.is_video:
            kwargs["num_frames"] = params.frames
            if family.fps_kwarg is not None and params.fps is not None:
                kwargs[family.fps_kwarg] = params.fps
        kwargs.update(family.call_kwargs)
        return kwargs

    def _generate(
        self,
        spec: ModelSpec,
        params: GenerationParams,
        image: Image.Image | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationOutput:
        if on_progress is not None and spec.name not in self._cache:
            on_progress(Progress(0, params.steps, "loading"))
        loaded, load_s = self._load(spec)
        pipe = loaded.pipeline(params.task)
        kwargs = self._call_kwargs(spec, pipe, params, image)
        _check_cancel(cancel)
        denoised_at: list[float] = []
        preview_every = self.preview_every

        def on_step_end(
            pipe: Any, i: int, t: Any, tensors: dict[str, torch.Tensor]
        ) -> dict[str, torch.Tensor]:
            # The pipeline's own count: img2img runs fewer steps than asked (strength).
            total = int(pipe.num_timesteps)
            step = i + 1
            if on_progress is not None:
                preview = None
                if preview_every and step % preview_every == 0 and step < total:
                    latents = tensors.get("latents")
                    preview = latent_preview(latents) if latents is not None else None
                on_progress(Progress(step, total, "denoising", preview))
            if cancel is not None and cancel.is_set():
                # Raise, not pipe._interrupt: an interrupted pipeline still decodes.
                raise Cancelled()
            if step == total:
                denoised_at.append(perf_counter())
                if on_progress is not None:
                    on_progress(Progress(total, total, "decoding"))
            return tensors

        start = perf_counter()
        output = pipe(**kwargs, callback_on_step_end=on_step_end)
        end = perf_counter()
        mid = denoised_at[0] if denoised_at else end
        frames = self._frames(output, params)
        return GenerationOutput(
            frames=frames,
            fps=params.fps if params.task.is_video else None,
            seed=params.seed,
            timings={"load": load_s, "denoise": mid - start, "decode": end - mid},
        )

    @staticmethod
    def _frames(output: Any, params: GenerationParams) -> list[Image.Image]:
        if params.task.is_video:
            frames = [_to_pil(f) for f in output.frames[0]]
        else:
            frames = [_to_pil(output.images[0])]
        size = (params.width, params.height)
        if frames[0].size != size:
            # A catalog size_multiple finer than the pipeline's: keep the promised size.
            log.warning("%s made %s frames, not %s; resizing", params.model, frames[0].size, size)
            frames = [f.resize(size, Image.Resampling.LANCZOS) for f in frames]
        return frames
