"""Model registry: a ``ModelSpec`` becomes loaded diffusers pipelines, one per task.

Weights come from one ``from_pretrained`` call per model (a hub id, a local folder, or the
offline tiny build); the other tasks' pipelines are built on that one's modules the way
``from_pipe`` does (``share_modules``). What differs between families in how they are called
lives in ``FAMILIES``: a new family is one entry there (and, for the tiny set, one builder in
``tiny``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import diffusers
import torch

from reelbot.catalog import ModelSpec, Task
from reelbot.errors import ConfigError, OutOfMemory
from reelbot.generation import load_errors, tiny

__all__ = [
    "FAMILIES",
    "Family",
    "LoadedModel",
    "family_of",
    "load_model",
    "model_source",
    "share_modules",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """How one pipeline family's call differs from the common one."""

    fps_kwarg: str | None = None
    """The call argument that takes the frame rate, for families conditioned on it."""
    call_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Fixed extra arguments for every call."""
    image_min_side: int = 0
    """Smallest side the pipeline accepts for an input image (it is scaled up to it)."""


FAMILIES: dict[str, Family] = {
    "zimage": Family(),
    # FLUX.2 takes the input as a reference image and refuses one under 64 px a side.
    "flux2_klein": Family(image_min_side=64),
    "wan22": Family(),
    # LTX scales its temporal RoPE by the frame rate the video will play at.
    "ltx": Family(fps_kwarg="frame_rate"),
}
"""Family name (``ModelSpec.family``) → its call quirks."""


def family_of(spec: ModelSpec) -> Family:
    """A spec's family quirks; an unlisted family gets the common call."""
    return FAMILIES.get(spec.family, Family())


def model_source(spec: ModelSpec, data_dir: Path) -> tuple[str, bool]:
    """Where ``from_pretrained`` reads the model, and whether that is the hub.

    ``tiny`` builds the offline model on first use; an existing folder is used as it is;
    anything else is a hub id.
    """
    if spec.source == "tiny":
        return str(tiny.ensure_built(spec.family, data_dir)), False
    path = Path(spec.source).expanduser()
    if path.is_dir():
        return str(path), False
    if spec.source.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"REELBOT_MODELS: model {spec.name}: folder {spec.source} not found")
    return spec.source, True


def pipeline_class(name: str) -> Any:
    """The diffusers pipeline class called ``name``, or a configuration error."""
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ConfigError(f"REELBOT_MODELS: {name!r} is not a diffusers pipeline class")
    return cls


def _base_task(spec: ModelSpec) -> Task:
    """The task whose pipeline is loaded from disk: the text-to-* one where there is one."""
    for task in (Task.IMAGINE, Task.VIDEO):
        if task in spec.tasks:
            return task
    return spec.tasks[0]


def share_modules(cls: Any, base: Any) -> Any:
    """A ``cls`` pipeline built on ``base``'s own modules and config: ``from_pipe`` minus a cast.

    ``from_pipe`` ends with ``pipeline.to(dtype)``, float32 unless told otherwise: on shared
    modules that upcasts a bf16 model in place (twice the memory, for the base pipeline too),
    and passing the model's dtype instead casts the modules a model keeps in float32 for
    precision (Wan's norms and time embedding). Here nothing is cast or copied.
    """
    components = base.components
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in components:
            kwargs[name] = components[name]
        elif name in base.config and not name.startswith("_"):
            kwargs[name] = base.config[name]
    # A required component the base lacks raises TypeError here, as from_pipe would.
    return cls(**kwargs)


def _modules(pipe: Any) -> list[torch.nn.Module]:
    return [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]


class LoadedModel:
    """One model's weights in memory, and a pipeline per task that shares them."""

    def __init__(self, spec: ModelSpec, base: Any, *, source: str, load_kwargs: dict[str, Any]):
        """Wrap ``base``, the pipeline loaded for the spec's base task."""
        self.spec = spec
        self.base = base
        self._source = source
        self._load_kwargs = load_kwargs
        self._device: str | None = None
        self._offloaded = False
        self._pipes: dict[str, Any] = {type(base).__name__: base}
        self._tuner: Callable[[Any], None] | None = None
        self._tuned: set[int] = set()
        self.warmed: set[Task] = set()
        """Tasks already run once at preload (compiled graphs are built)."""

    def pipeline(self, task: Task) -> Any:
        """The pipeline serving ``task``, derived from the base once, sharing its modules."""
        name = self.spec.pipelines[task]
        pipe = self._pipes.get(name)
        if pipe is not None:
            return pipe
        cls = pipeline_class(name)
        try:
            pipe = share_modules(cls, self.base)
        except (TypeError, ValueError) as exc:
            log.warning(
                "%s cannot share %s's weights (%s); loading it separately",
                name,
                type(self.base).__name__,
                exc,
            )
            pipe = cls.from_pretrained(self._source, **self._load_kwargs)
            if self._offloaded and self._device is not None:
                pipe.enable_model_cpu_offload(device=self._device)
            elif self._device is not None:
                pipe.to(self._device)
        pipe.set_progress_bar_config(disable=True)
        self._pipes[name] = pipe
        self._tune_one(pipe)
        return pipe

    @property
    def offloaded(self) -> bool:
        """Whether the weights stay on the CPU between module calls (model CPU offload)."""
        return self._offloaded

    def tune(self, apply: Callable[[Any], None]) -> None:
        """Run ``apply`` once per distinct denoiser, now and for pipelines derived later."""
        # Pipelines sharing modules share the denoiser: compiling or switching its attention
        # once serves them all; a pipeline loaded separately has its own and is tuned too.
        self._tuner = apply
        for pipe in list(self._pipes.values()):
            self._tune_one(pipe)

    def _tune_one(self, pipe: Any) -> None:
        denoiser = getattr(pipe, "transformer", None)
        if self._tuner is None or denoiser is None or id(denoiser) in self._tuned:
            return
        self._tuned.add(id(denoiser))
        self._tuner(pipe)

    @property
    def nbytes(self) -> int:
        """Estimated bytes of weights: parameters and buffers of every distinct module."""
        seen: set[int] = set()
        total = 0
        for pipe in self._pipes.values():
            for module in _modules(pipe):
                for tensor in (*module.parameters(), *module.buffers()):
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        total += tensor.numel() * tensor.element_size()
        return total

    @property
    def resident_bytes(self) -> int:
        """Bytes this model holds where the budget counts: all of it, unless offloaded, when
        only what sits on the accelerator (none between calls: hooks move parts in and out)."""
        if not self._offloaded:
            return self.nbytes
        return sum(
            t.numel() * t.element_size()
            for pipe in self._pipes.values()
            for module in _modules(pipe)
            for t in (*module.parameters(), *module.buffers())
            if t.device.type != "cpu"
        )

    @property
    def largest_module_bytes(self) -> int:
        """Bytes of the biggest component: what an offloaded model puts on the GPU to run."""
        sizes = [
            sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
            for pipe in self._pipes.values()
            for m in _modules(pipe)
        ]
        return max(sizes, default=0)

    def to(self, device: str) -> None:
        """Move every pipeline's modules to ``device``."""
        for pipe in self._pipes.values():
            pipe.to(device)
        self._device = device

    def offload(self, device: str) -> None:
        """Keep weights on the CPU and move each module to ``device`` only while it runs."""
        # Needs an accelerator (accelerate hooks); the caller checks the device.
        for pipe in self._pipes.values():
            pipe.enable_model_cpu_offload(device=device)
        self._device = device
        self._offloaded = True

    def release(self) -> None:
        """Drop every pipeline and so the weights; the caller then runs ``free_memory``.

        Nothing is copied back to the host first: ``pipe.to("cpu")`` here held a second copy
        of a GPU model in host memory (old and new together peaked near 43 GB on the 24 GB
        set). Offload hooks are removed, since accelerate's hooks hold the modules too.
        """
        for pipe in self._pipes.values():
            if self._offloaded:
                pipe.remove_all_hooks()
        self._pipes.clear()
        self.base = None
        self._tuner = None
        self._device = None
        self._offloaded = False
        self._tuned.clear()
        self.warmed.clear()


def load_model(
    spec: ModelSpec,
    *,
    data_dir: Path,
    dtype: torch.dtype,
    component_dtypes: Mapping[str, torch.dtype] | None = None,
) -> LoadedModel:
    """Load a spec's base pipeline on the CPU in ``dtype`` (the caller moves it to a device).

    ``component_dtypes`` overrides ``dtype`` for the components it names (Wan's VAE in
    float32): diffusers reads a dict of dtypes per component, ``"default"`` for the rest.
    """
    source, from_hub = model_source(spec, data_dir)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if component_dtypes:
        kwargs["dtype"] = {"default": dtype, **component_dtypes}
    folder = Path(source)
    if from_hub:
        kwargs["cache_dir"] = str(data_dir / "hub")
        folder = load_errors.hub_folder(data_dir / "hub", source)
    cls = pipeline_class(spec.pipelines[_base_task(spec)])
    try:
        base = cls.from_pretrained(source, **kwargs)
    except Exception as exc:
        failure = load_errors.explain(spec, exc, folder=folder)
        if failure is None:
            raise
        if not isinstance(failure, OutOfMemory):
            raise failure from exc
    else:
        base.set_progress_bar_config(disable=True)
        return LoadedModel(spec, base, source=source, load_kwargs=kwargs)
    # Out of memory: raised outside the except block, whose traceback holds the partly loaded
    # weights, so that they are freed.
    raise failure
