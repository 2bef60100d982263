"""The generation runner: one blocking call turns resolved parameters into PIL frames.

The queue worker calls ``Runner.generate`` through ``asyncio.to_thread``. Calls are serialised by
a lock (diffusers pipelines share scheduler state and are not safe to call concurrently);
pipelines stay resident in one LRU cache under a memory budget; progress and cancellation go
through diffusers' ``callback_on_step_end``, once per denoising step. ``generate_batch`` runs
compatible image jobs as one call (``batching``); ``GpuOptions`` picks the accelerator knobs.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from reelbot.catalog import Catalog, ModelSpec, Task, UpscalerSpec
from reelbot.errors import (
    Cancelled,
    ConfigError,
    MissingImage,
    MissingVideo,
    ModelUnavailable,
    OutOfMemory,
    UnknownModel,
)
from reelbot.generation import footprint, load_errors, tiny, upscale, video_frames
from reelbot.generation.batching import plan_batches
from reelbot.generation.describe import Captioner
from reelbot.generation.device import (
    compute_dtype,
    free_memory,
    generator_device,
    memory_total,
    pick_device,
)
from reelbot.generation.editing import Edit, prepare
from reelbot.generation.gpu import (
    GpuOptions,
    check_attention_backend,
    compile_denoiser,
    set_vae_tiling,
)
from reelbot.generation.previews import Previewer, load_preview_vae, source_of
from reelbot.generation.registry import LoadedModel, family_of, load_model
from reelbot.generation.speed import apply_speed, check_speed, reset_cache
from reelbot.jobs import GenerationParams

__all__ = [
    "BatchResult",
    "GenerationOutput",
    "GpuOptions",
    "Progress",
    "ProgressCallback",
    "Runner",
    "fit_image",
]

log = logging.getLogger(__name__)

Stage = Literal["loading", "denoising", "decoding", "running"]
"""``running``: a tiled pass (``/upscale``), one step per tile."""

# Without an explicit budget, leave a fifth of the accelerator for activations and the VAE.
DEFAULT_BUDGET_FRACTION = 0.8


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

    frames: Sequence[Image.Image]
    """A list, or a ``frames.FrameArray`` (a video's Upscale and Smooth)."""
    fps: int | None
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    """/describe's prompt suggestions (its frames hold the described image)."""


BatchResult = GenerationOutput | BaseException
"""One item of ``Runner.generate_batch``: its output, or what stopped it (``Cancelled``…)."""


@dataclass
class _Item:
    """One job inside a pipeline call."""

    params: GenerationParams
    image: Image.Image | None
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    video: Sequence[Image.Image] | None = None
    """/restyle: the input clip's frames, already sampled to the model's grid."""
    last_image: Image.Image | None = None
    """/keyframes: the frame the video ends on."""
    edit: Edit | None = None
    """/inpaint and /blend: the extra call arguments, and the composite after."""

    @property
    def cancelled(self) -> bool:
        return _is_set(self.cancel)

    def progress(self, event: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """An input image turned upright, RGB, centre-cropped to the aspect and resized to size."""
    upright = ImageOps.exif_transpose(image).convert("RGB")
    if upright.size == (width, height):
        return upright
    return ImageOps.fit(upright, (width, height), method=Image.Resampling.LANCZOS)


def _to_pil(frame: Any) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _edit_kwargs(
    pipe: Any,
    accepted: Mapping[str, Any],
    params: GenerationParams,
    kwargs: dict[str, Any],
    video: Sequence[Image.Image] | None,
    last_image: Image.Image | None,
) -> dict[str, Any]:
    """/restyle's input frames or /keyframes' two images, in the terms the pipeline takes."""
    size = (params.width, params.height)
    if params.task.needs_video:
        if video is None or "video" not in accepted:
            raise ConfigError(f"{type(pipe).__name__} takes no input video for /restyle")
        # WanVideoToVideoPipeline derives the VAE's spatial scale from its temporal
        # downsampling (8), right for Wan 2.1's VAE but not Wan 2.2's (16, in its config, which
        # WanPipeline reads): the latents would not match the encoded video.
        scale = getattr(
            getattr(getattr(pipe, "vae", None), "config", None), "scale_factor_spatial", None
        )
        if isinstance(scale, int) and getattr(pipe, "vae_scale_factor_spatial", scale) != scale:
            from diffusers.video_processor import VideoProcessor

            pipe.vae_scale_factor_spatial = scale
            pipe.video_processor = VideoProcessor(vae_scale_factor=scale)
        return {"video": [fit_image(f, *size) for f in video]}
    if last_image is None:
        raise MissingImage(f"/{params.task.value} needs a last image as well as a first.")
    last = fit_image(last_image, *size)
    if "last_image" in accepted:  # Wan 2.1's first-last-frame pipelines
        return {"last_image": last}
    if "conditions" in accepted:
        # LTXConditionPipeline: the two images as conditions on the first and the last frame.
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        first = kwargs.pop("image")
        return {
            "conditions": [
                LTXVideoCondition(image=first, frame_index=0),
                LTXVideoCondition(image=last, frame_index=params.frames - 1),
            ]
        }
    raise ConfigError(f"{type(pipe).__name__} takes no last frame for /keyframes")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_set(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


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
        gpu: GpuOptions | None = None,
    ) -> None:
        """Pick the device; no model loads until ``preload`` or ``generate``.

        ``memory_budget_bytes`` bounds the resident weights (default: 80 % of an accelerator's
        memory, unbounded on the CPU). ``preview_every`` sets how often, in steps, a progress
        event carries a preview image (0: never). ``gpu`` holds the accelerator knobs
        (default: auto, which is plain eager on the CPU).
        """
        self.catalog = catalog
        self.data_dir = Path(data_dir)
        self._device = pick_device(device)
        if memory_budget_bytes is None:
            total = memory_total(self._device)
            memory_budget_bytes = int(total * DEFAULT_BUDGET_FRACTION) if total else None
        self.memory_budget_bytes = memory_budget_bytes
        self.gpu = gpu if gpu is not None else GpuOptions()
        check_attention_backend(self.gpu.attention_backend)
        check_speed(catalog.models.values())
        self._memory_total = memory_total(self._device)
        self.preview_every = preview_every
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._sr: dict[str, upscale.SRNet] = {}
        """Loaded upscalers by name: a few MB each, kept beside the budgeted pipelines."""
        self._previewers: dict[tuple[str, str], Previewer] = {}
        self._captioners: dict[str, Captioner] = {}
        """Loaded /describe models by name: small, kept beside the budgeted pipelines."""

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
        if task in (Task.UPSCALE, Task.UPSCALE_VIDEO):  # an upscaler, not a model
            with self._lock:
                self._sr_net(self.catalog.upscaler(model))
            return
        if task == Task.DESCRIBE:
            with self._lock:
                self._captioner(self.catalog.pick(Task.DESCRIBE, model))
            return
        spec = self.catalog.get(model)
        with self._lock:
            try:
                loaded, _ = self._load(spec)
                for each in (task,) if task is not None else spec.tasks:
                    loaded.pipeline(each)
                    warm = self.gpu.warmup and self.gpu.compiles_on(self._device)
                    # An edit's pipeline runs the denoiser imagine warms (and needs a mask).
                    if warm and each not in loaded.warmed and not each.is_edit:
                        self._warm_up(spec, loaded, each)
                        loaded.warmed.add(each)
                return
            except torch.OutOfMemoryError as exc:
                detail = _first_line(exc)
            free_memory(self._device)
            raise OutOfMemory(f"loading {model} on {self._device}: {detail}")

    def unload(self, model: str | None = None) -> None:
        """Drop one model, or all of them, from memory."""
        with self._lock:
            for name in [model] if model is not None else list(self._cache):
                self._drop(name)
            free_memory(self._device)

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        video: Sequence[Image.Image] | None = None,
        last_image: Image.Image | None = None,
        mask: Image.Image | None = None,
        references: Sequence[Image.Image] = (),
    ) -> GenerationOutput:
        """Run one generation, blocking; raises ``Cancelled`` or ``OutOfMemory`` as they occur.

        ``on_progress`` is called from this thread: once with stage "loading" when the model
        is not resident, once per denoising step, and once with stage "decoding". Setting
        ``cancel`` stops the run at the end of the current step. ``video`` is /restyle's input
        (frames on the model's grid, ``reelbot.video_inputs``), ``last_image`` /keyframes' end.
        /inpaint takes ``mask`` (white = change; none for a zoom or pan), /blend ``image`` and
        ``references`` (2-4 in all); /describe returns the image with ``texts``.
        """
        if params.task == Task.UPSCALE:
            return self._upscale(params, image, on_progress, cancel)
        if params.task == Task.DESCRIBE:
            return self._describe(params, image, on_progress, cancel)
        edit = None
        if params.task.is_edit:
            min_side = family_of(self.catalog.pick(params.task, params.model)).image_min_side
            edit = prepare(params, image, mask=mask, references=references, image_min_side=min_side)
        spec = self.catalog.pick(params.task, params.model)
        if params.task.needs_image and image is None:
            raise MissingImage(f"/{params.task.value} needs an input image.")
        if params.task.needs_video and not video:
            raise MissingVideo(f"/{params.task.value} needs an input video.")
        if params.task == Task.KEYFRAMES and last_image is None:
            raise MissingImage(f"/{params.task.value} needs a last image as well as a first.")
        _check_cancel(cancel)
        item = _Item(params, image, on_progress, cancel, video, last_image, edit)
        with self._lock:
            # The job may have been cancelled while an earlier one held the lock.
            _check_cancel(cancel)
            result = self._run_guarded(spec, [item])[0]
        if isinstance(result, BaseException):
            raise result
        del result.timings["batch"]
        return result

    def generate_batch(
        self,
        items: Sequence[tuple[GenerationParams, Image.Image | None]],
        *,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        cancel_events: Sequence[threading.Event | None] | None = None,
    ) -> list[BatchResult]:
        """Run several jobs, compatible ones as one pipeline call; one result per item, in order.

        Items that ``batching.batch_key`` matches share a call, each with its own seeded
        generator, so each comes out as ``generate`` would make it alone (see
        ``tests/unit/test_batching.py`` for how exact that is). ``on_progress`` and
        ``cancel_events`` are per item. A cancelled item's result is ``Cancelled`` and the
        others go on; a call whose items are all cancelled stops at the next step. Errors are
        returned in the item's place, not raised (``OutOfMemory``, ``MissingImage``…).
        """
        count = len(items)
        callbacks = list(on_progress) if on_progress is not None else [None] * count
        cancels = list(cancel_events) if cancel_events is not None else [None] * count
        if len(callbacks) != count or len(cancels) != count:
            raise ValueError("on_progress and cancel_events must have one entry per item")
        results: list[BatchResult | None] = [None] * count
        specs: dict[int, ModelSpec] = {}
        for index, (params, image) in enumerate(items):
            try:
                specs[index] = self.catalog.pick(params.task, params.model)
                if params.task.needs_image and image is None:
                    raise MissingImage(f"/{params.task.value} needs an input image.")
            except (UnknownModel, MissingImage) as exc:
                results[index] = exc
        valid = [i for i in range(count) if results[i] is None]
        groups = plan_batches([items[i][0] for i in valid], max_size=max(1, len(valid)))
        with self._lock:
            for group in groups:
                indices = [valid[g] for g in group]
                # Cancelled while waiting for the lock or for an earlier group: never started.
                live = [i for i in indices if not _is_set(cancels[i])]
                for i in indices:
                    if i not in live:
                        results[i] = Cancelled()
                if not live:
                    continue
                batch = [_Item(*items[i], callbacks[i], cancels[i]) for i in live]
                for i, result in zip(live, self._run_guarded(specs[live[0]], batch), strict=True):
                    results[i] = result
        return [r if r is not None else Cancelled() for r in results]

    def upscale_frames(
        self,
        frames: Sequence[Image.Image],
        *,
        scale: int = 2,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Sequence[Image.Image]:
        """A video's Upscale: the super-resolution network over every frame, ``scale`` times
        larger, batched and tiled (``video_frames.sr_frames``); one progress step per batch."""
        spec = self.catalog.upscaler(model)
        _check_cancel(cancel)

        def on_batch(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(Progress(done, total, "running"))

        with self._lock:
            _check_cancel(cancel)
            try:
                net = self._sr_net(spec)
                return video_frames.sr_frames(
                    net,
                    frames,
                    device=self._device,
                    scale=scale,
                    tile=spec.tile,
                    overlap=spec.tile_overlap,
                    on_batch=on_batch,
                    cancel=cancel,
                )
            except torch.OutOfMemoryError as exc:
                detail = _first_line(exc)
            free_memory(self._device)
            raise OutOfMemory(f"{spec.name} on {self._device}: {detail}")

    # -- internals --------------------------------------------------------------------------

    def _captioner(self, spec: ModelSpec) -> Captioner:
        """The loaded /describe model ``spec``, on this runner's device (lock held)."""
        found = self._captioners.get(spec.name)
        if found is None:
            dtype = compute_dtype(self._device, spec.dtype)
            found = Captioner.load(spec, data_dir=self.data_dir, device=self._device, dtype=dtype)
            self._captioners[spec.name] = found
        return found

    def _describe(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationOutput:
        """/describe: four prompt suggestions for ``image``; the frames hold the image itself,
        so a result is stored and posted like any other."""
        if image is None:
            raise MissingImage("/describe needs an input image.")
        spec = self.catalog.pick(Task.DESCRIBE, params.model)

        def on_round(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(Progress(done, total, "running"))

        _check_cancel(cancel)
        with self._lock:
            _check_cancel(cancel)
            start = perf_counter()
            if spec.name not in self._captioners:
                on_round(0, 1)
            captioner = self._captioner(spec)
            load_s = perf_counter() - start
            texts = captioner.suggestions(image, seed=params.seed, cancel=cancel, on_round=on_round)
        source = image.convert("RGB")
        timings = {"load": load_s, "describe": perf_counter() - start - load_s}
        return GenerationOutput(
            frames=[source], fps=None, seed=params.seed, timings=timings, texts=texts
        )

    def _sr_net(self, spec: UpscalerSpec) -> upscale.SRNet:
        """The loaded upscaler ``spec``, on this runner's device (lock held)."""
        net = self._sr.get(spec.name)
        if net is None:
            if spec.weights == "tiny":
                path = tiny.ensure_sr_built(self.data_dir)
            else:
                path = upscale.weights_path(spec.weights, self.data_dir)
            net = upscale.load_sr(path).to(self._device)
            log.info(
                "upscaler %s: %s x%d (%s loader)",
                spec.name,
                net.architecture,
                net.scale,
                net.loader,
            )
            self._sr[spec.name] = net
        return net

    def _upscale(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationOutput:
        """``/upscale``: super-resolution in tiles, then for ``--creative`` the image model's
        img2img over tiles of its own size (a hires fix); one progress step per tile."""
        if image is None:
            raise MissingImage("/upscale needs an input image.")
        spec = self.catalog.upscaler(params.model)
        _check_cancel(cancel)
        with self._lock:
            _check_cancel(cancel)
            try:
                return self._run_upscale(spec, params, image, on_progress, cancel)
            except torch.OutOfMemoryError as exc:
                detail = _first_line(exc)
            free_memory(self._device)
            raise OutOfMemory(f"{params.model} on {self._device}: {detail}")

    def _run_upscale(
        self,
        spec: UpscalerSpec,
        params: GenerationParams,
        image: Image.Image,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationOutput:
        def report(event: Progress) -> None:
            if on_progress is not None:
                on_progress(event)

        start = perf_counter()
        if spec.name not in self._sr:
            report(Progress(0, 1, "loading"))
        net = self._sr_net(spec)
        model = (
            self.catalog.pick(Task.REMIX, params.upscale_model) if params.upscale_model else None
        )
        loaded = self._load(model)[0] if model is not None else None
        load_s = perf_counter() - start
        source = image.convert("RGB")
        width, height = params.width, params.height
        if (source.width - source.height) * (width - height) < 0:
            width, height = height, width  # sized from the header, turned by its EXIF since
        sr_tiles = upscale.tiles_for(source.width, source.height, spec.tile, spec.tile_overlap)
        refine_tiles: list[upscale.Tile] = []
        if model is not None:
            m = model.size_multiple
            tile_w = max(m, min(model.width, width // m * m))
            tile_h = max(m, min(model.height, height // m * m))
            refine_tiles = upscale.tiles_for(width, height, tile_w, tile_w // 4, tile_h)
        total = len(sr_tiles) + len(refine_tiles)

        def stepped(offset: int) -> Callable[[int, int], None]:
            return lambda done, _: report(Progress(offset + done, total, "running"))

        begun = perf_counter()
        out = upscale.run_sr(
            net,
            source,
            device=self._device,
            tile=spec.tile,
            overlap=spec.tile_overlap,
            on_tile=stepped(0),
            cancel=cancel,
        )
        if out.size != (width, height):
            out = out.resize((width, height), Image.Resampling.LANCZOS)
        timings = {"load": load_s, "upscale": perf_counter() - begun}
        if model is not None and loaded is not None:
            begun = perf_counter()
            pipe = loaded.pipeline(Task.REMIX)

            def refine(part: Image.Image, index: int) -> Image.Image:
                tile = params.model_copy(
                    update={
                        "task": Task.REMIX,
                        "model": model.name,
                        "width": part.width,
                        "height": part.height,
                        "seed": (params.seed + index) % 2**32,
                        "upscale_model": None,
                    }
                )

                def on_step(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                    _check_cancel(cancel)
                    return tensors

                kwargs = self._call_kwargs(model, pipe, [tile], part)
                return _to_pil(pipe(**kwargs, callback_on_step_end=on_step).images[0])

            overlap = refine_tiles[0].right - refine_tiles[0].left
            out = upscale.refine_tiles(
                out,
                refine_tiles,
                refine,
                overlap=overlap // 4,
                on_tile=stepped(len(sr_tiles)),
                cancel=cancel,
            )
            timings["refine"] = perf_counter() - begun
        return GenerationOutput(frames=[out], fps=None, seed=params.seed, timings=timings)

    def _run_guarded(self, spec: ModelSpec, items: list[_Item]) -> list[BatchResult]:
        """``_generate`` with its failures turned into per-item results (lock held)."""
        failure: type[Cancelled] | str | None = None
        try:
            return self._generate(spec, items)
        except Cancelled:
            failure = Cancelled
        except (OutOfMemory, ModelUnavailable) as exc:
            # The model did not load (load_errors): every item fails with its one sentence.
            return [exc for _ in items]
        except torch.OutOfMemoryError as exc:
            failure = _first_line(exc)
        # Built outside the except blocks: the caught traceback holds the step's tensors,
        # and accelerator memory is only freed once it is gone.
        free_memory(self._device)
        if failure is Cancelled:
            return [Cancelled() for _ in items]
        names = ", ".join(sorted({item.params.model for item in items}))
        return [OutOfMemory(f"{names} on {self._device}: {failure}") for _ in items]

    def _tune(self, pipe: Any, spec: ModelSpec) -> None:
        """Apply the model's speed options, then the accelerator knobs, to one denoiser."""
        applied = apply_speed(pipe, spec, device=self._device, attention=self.gpu.attention_backend)
        if self.gpu.compiles_on(self._device):
            if applied.eager_because is None:
                compile_denoiser(pipe)
            else:
                log.warning("%s runs eager: %s", spec.name, applied.eager_because)

    def _warm_up(self, spec: ModelSpec, loaded: LoadedModel, task: Task) -> None:
        """One short run at the model's default size, so the compiler runs before any job."""
        params = GenerationParams(
            task=task,
            model=spec.name,
            prompt="warm-up",
            width=spec.width,
            height=spec.height,
            steps=min(2, spec.steps_max),
            guidance=spec.guidance_default,
            seed=0,
            strength=spec.strength_default if task.needs_image else None,
            frames=spec.frames_default if task.is_video else 1,
            fps=spec.fps_default if task.is_video else None,
        )
        image = Image.new("RGB", (spec.width, spec.height), (128, 128, 128))
        pipe = loaded.pipeline(task)
        kwargs = self._call_kwargs(
            spec,
            pipe,
            [params],
            image if task.needs_image else None,
            video=[image] * params.frames if task.needs_video else None,
            last_image=image if task == Task.KEYFRAMES else None,
        )
        # Latents only: the compiled blocks are the denoiser's; the VAE runs eager anyway.
        kwargs["output_type"] = "latent"
        start = perf_counter()
        pipe(**kwargs)
        log.info("%s %s warmed up in %.1f s", spec.name, task.value, perf_counter() - start)

    def _load(self, spec: ModelSpec) -> tuple[LoadedModel, float]:
        """The resident model for ``spec`` (marked most recent), loading it if needed.

        Room is made before the weights are read in, sized from their files (``footprint``),
        and checked again with the loaded size: loading first and evicting after held the old
        and the new model in host memory together.
        """
        cached = self._cache.get(spec.name)
        if cached is not None:
            self._cache.move_to_end(spec.name)
            if cached.offloaded:
                # It holds nothing on the GPU between calls; to run, its largest part must fit.
                self._evict_for(cached.largest_module_bytes, keep=spec.name)
            return cached, 0.0
        start = perf_counter()
        dtype = compute_dtype(self._device, spec.dtype)
        component_dtypes = {
            name: compute_dtype(self._device, each) for name, each in spec.component_dtypes.items()
        }
        budget = self.memory_budget_bytes
        # Offload needs accelerate's hooks and an accelerator to move modules onto.
        offload = self.gpu.offload and self._device.startswith("cuda")
        expected = footprint.weight_bytes(
            spec, data_dir=self.data_dir, dtype=dtype, component_dtypes=component_dtypes
        )
        if expected is not None:
            # Every load passes through host memory, where the offloaded models live.
            self._evict_host_for(expected)
            if not (offload and budget is not None and expected > budget):
                self._evict_for(expected)
        size = "size unknown until loaded" if expected is None else f"~{expected / 2**30:.2f} GiB"
        log.info("loading %s (%s)", spec.name, size)
        loaded = load_model(
            spec, data_dir=self.data_dir, dtype=dtype, component_dtypes=component_dtypes
        )
        need = loaded.nbytes
        offloading = offload and budget is not None and need > budget
        # An offloaded model counts what it puts on the GPU (one part at a time), not its size.
        self._evict_for(loaded.largest_module_bytes if offloading else need)
        if offloading:
            self._evict_host_for(need)
        try:
            if offloading and budget is not None:
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
        else:
            loaded.tune(lambda pipe: self._tune(pipe, spec))
            self._cache[spec.name] = loaded
            return loaded, perf_counter() - start
        # Outside the except block: its traceback holds the weights that did not fit.
        free_memory(self._device)
        raise load_errors.out_of_memory(spec, self._device)

    def _previewer(self, spec: ModelSpec, pipe: Any) -> Previewer:
        """The model's step previews: its ``preview_vae`` (loaded once), else the projection."""
        key = (spec.name, type(pipe).__name__)
        found = self._previewers.get(key)
        if found is None:
            vae = None
            if spec.preview_vae is not None:
                built = spec.preview_vae == "tiny"
                folder = tiny.ensure_built(tiny.PREVIEW_VAE, self.data_dir) if built else None
                source = source_of(spec.preview_vae, tiny_folder=folder)
                dtype = compute_dtype(self._device, spec.dtype)
                vae = load_preview_vae(source, device=self._device, dtype=dtype)
            found = self._previewers[key] = Previewer(pipe, vae)
        return found

    def _evict_for(self, need: int, keep: str | None = None) -> None:
        """Drop least recently used models (never ``keep``) until ``need`` more bytes fit."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        evicted = False
        while sum(m.resident_bytes for m in self._cache.values()) + need > budget:
            name = next((n for n in self._cache if n != keep), None)
            if name is None:
                break
            log.info("evicting %s to stay under the memory budget", name)
            self._drop(name)
            evicted = True
        if evicted:
            free_memory(self._device)

    def _evict_host_for(self, need: int) -> None:
        """Drop least recently used offloaded models until ``need`` more bytes fit the host's
        share for them (``GpuOptions.offload_host_budget``)."""
        limit = self.gpu.offload_host_budget()
        held = [name for name, m in self._cache.items() if m.offloaded]
        if limit is None or not held:
            return
        evicted = False
        while held and sum(self._cache[n].nbytes for n in held) + need > limit:
            name = held.pop(0)
            log.info("evicting %s to stay under the host memory for offloaded models", name)
            self._drop(name)
            evicted = True
        if evicted:
            free_memory(self._device)

    def _drop(self, name: str) -> None:
        """Forget a resident model, with its step previewers (their preview VAE)."""
        entry = self._cache.pop(name, None)
        self._previewers = {k: v for k, v in self._previewers.items() if k[0] != name}
        if entry is not None:
            entry.release()

    def _call_kwargs(
        self,
        spec: ModelSpec,
        pipe: Any,
        group: Sequence[GenerationParams],
        image: Image.Image | None,
        video: Sequence[Image.Image] | None = None,
        last_image: Image.Image | None = None,
    ) -> dict[str, Any]:
        """The pipeline call for ``group``: one job, or a batch that ``batch_key`` matched."""
        accepted = inspect.signature(pipe.__call__).parameters
        family = family_of(spec)
        params = group[0]
        device = generator_device(self._device)
        generators = [torch.Generator(device).manual_seed(p.seed) for p in group]
        batched = len(group) > 1
        if params.count > 1:
            # A grid: one call, image i from its own generator seeded seed + i, so each
            # image is what ``--seed seed+i --n 1`` makes alone (batching runs a grid alone).
            if batched:
                raise ValueError("a grid (count > 1) runs alone in its pipeline call")
            generators = [
                torch.Generator(device).manual_seed(params.seed + i) for i in range(params.count)
            ]
        kwargs: dict[str, Any] = {
            # A list of one seeds exactly like the bare generator (diffusers' randn_tensor);
            # the bare values keep the one-job call what it always was. The lists are new
            # each call: ZImagePipeline._encode_prompt rewrites its prompt list in place.
            "prompt": [p.prompt for p in group] if batched else params.prompt,
            "height": params.height,
            "width": params.width,
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance,
            "generator": generators if batched or params.count > 1 else generators[0],
            "output_type": "pil",
        }
        if params.count > 1:
            kwargs["num_images_per_prompt"] = params.count

        def require(name: str, what: str) -> None:
            if name not in accepted:
                raise ConfigError(
                    f"REELBOT_MODELS: model {spec.name} declares {what}, but "
                    f"{type(pipe).__name__} takes no {name!r}"
                )

        # The model's published negative prompt (Wan's) stands in where the user gave none.
        negatives = [p.negative_prompt or spec.negative_default for p in group]
        if negatives[0] and spec.supports_negative:
            require("negative_prompt", "supports_negative")
            kwargs["negative_prompt"] = negatives if batched else negatives[0]
        if params.task.needs_image:
            if image is None or batched:
                raise ValueError("an image task runs one job per call, with its image")
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
        if params.task.needs_video or params.task == Task.KEYFRAMES:
            if batched:
                raise ValueError("a video-input task runs one job per call")
            kwargs.update(_edit_kwargs(pipe, accepted, params, kwargs, video, last_image))
        if params.task.is_video and "video" not in kwargs:
            kwargs["num_frames"] = params.frames
            if family.fps_kwarg is not None and params.fps is not None:
                kwargs[family.fps_kwarg] = params.fps
            voxels = params.width * params.height * params.frames
            set_vae_tiling(pipe, self.gpu.tiles(self._device, self._memory_total, voxels))
        else:
            pixels = params.width * params.height * max(len(group), params.count)
            tiled = self.gpu.tiles(self._device, self._memory_total, pixels, video=False)
            set_vae_tiling(pipe, tiled)
        kwargs.update(family.call_kwargs)
        return kwargs

    def _generate(self, spec: ModelSpec, items: list[_Item]) -> list[BatchResult]:
        """One pipeline call for ``items`` (one job, or a compatible batch); lock held."""
        first = items[0].params
        if spec.name not in self._cache:
            for item in items:
                item.progress(Progress(0, first.steps, "loading"))
        loaded, load_s = self._load(spec)
        pipe = loaded.pipeline(first.task)
        kwargs = self._call_kwargs(
            spec,
            pipe,
            [item.params for item in items],
            items[0].image,
            video=items[0].video,
            last_image=items[0].last_image,
        )
        if items[0].edit is not None:
            kwargs.update(items[0].edit.kwargs)
        if all(item.cancelled for item in items):
            raise Cancelled()
        dropped: set[int] = set()
        denoised_at: list[float] = []
        preview_every = self.preview_every
        previewer = self._previewer(spec, pipe) if preview_every else None

        def on_step_end(
            pipe: Any, i: int, t: Any, tensors: dict[str, torch.Tensor]
        ) -> dict[str, torch.Tensor]:
            # The pipeline's own count: img2img runs fewer steps than asked (strength).
            total = int(pipe.num_timesteps)
            step = i + 1
            live = [k for k in range(len(items)) if k not in dropped]
            preview_due = preview_every and step % preview_every == 0 and step < total
            for k in live:
                if items[k].on_progress is None:
                    continue
                latents = tensors.get("latents") if preview_due else None
                preview = None
                if latents is not None and previewer is not None:
                    preview = previewer(latents[k : k + 1], first.width, first.height)
                items[k].progress(Progress(step, total, "denoising", preview))
            # A cancelled item stays in the batch (its latents cannot leave the pipeline's
            # loop) but is dropped from the output; when none is left, stop.
            dropped.update(k for k in live if items[k].cancelled)
            if len(dropped) == len(items):
                # Raise, not pipe._interrupt: an interrupted pipeline still decodes.
                raise Cancelled()
            if step == total:
                denoised_at.append(perf_counter())
                for k in range(len(items)):
                    if k not in dropped:
                        items[k].progress(Progress(total, total, "decoding"))
            return tensors

        start = perf_counter()
        reset_cache(pipe)  # a cancelled call leaves its cache hooks mid-schedule
        output = pipe(**kwargs, callback_on_step_end=on_step_end)
        end = perf_counter()
        mid = denoised_at[0] if denoised_at else end
        timings = {
            "load": load_s,
            "denoise": mid - start,
            "decode": end - mid,
            "batch": float(len(items)),
        }
        results: list[BatchResult] = []
        for k, item in enumerate(items):
            if k in dropped:
                results.append(Cancelled())
                continue
            # A grid (alone in its call) returns its images as the frames, in seed order.
            frames = (
                [f for i in range(item.params.count) for f in self._frames(output, item.params, i)]
                if item.params.count > 1
                else self._frames(output, item.params, k)
            )
            if item.edit is not None:
                frames = item.edit.finish(frames)
            results.append(
                GenerationOutput(
                    frames=frames,
                    fps=item.params.fps if item.params.task.is_video else None,
                    seed=item.params.seed,
                    timings=dict(timings),
                )
            )
        return results

    @staticmethod
    def _frames(output: Any, params: GenerationParams, index: int = 0) -> list[Image.Image]:
        if params.task.is_video:
            frames = [_to_pil(f) for f in output.frames[index]]
        else:
            frames = [_to_pil(output.images[index])]
        size = (params.width, params.height)
        if frames[0].size != size:
            # A catalog size_multiple finer than the pipeline's: keep the promised size.
            log.warning("%s made %s frames, not %s; resizing", params.model, frames[0].size, size)
            frames = [f.resize(size, Image.Resampling.LANCZOS) for f in frames]
        return frames
