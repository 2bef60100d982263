"""The model catalog and style presets: what a deployment serves, read from TOML, no torch.

The catalog sits at the bottom layer so that chat adapters can validate options, list models
and estimate costs without importing torch; ``reelbot.generation`` turns a ``ModelSpec`` into a
loaded pipeline.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reelbot.errors import ConfigError, UnknownModel


class Task(StrEnum):
    """The generation tasks, named after the chat commands."""

    IMAGINE = "imagine"
    REMIX = "remix"
    VIDEO = "video"
    ANIMATE = "animate"
    UPSCALE = "upscale"
    RESTYLE = "restyle"
    """Video-to-video: an input clip redrawn from a prompt (``reelbot.generation.video_edit``)."""
    KEYFRAMES = "keyframes"
    """Image-to-video from a first and a last frame; a model lists it where its family can."""
    INPAINT = "inpaint"
    """Vary region, zoom out and pan: masked or bordered areas redrawn (``generation.editing``)."""
    BLEND = "blend"
    """2-4 images combined through a model's multi-reference input; a model lists it if it can."""
    DESCRIBE = "describe"
    """An image turned into prompt suggestions by a captioner (``generation.describe``)."""
    SMOOTH = "smooth"
    """A clip's frames doubled by motion interpolation (ffmpeg's minterpolate); no model."""
    UPSCALE_VIDEO = "upscale_video"
    """A clip's frames each made twice as large by the upscaler (a video result's Upscale
    button; not a command of its own: ``Task.is_command``)."""

    @property
    def needs_image(self) -> bool:
        """Whether the task takes an input image."""
        return self in (
            Task.REMIX,
            Task.ANIMATE,
            Task.UPSCALE,
            Task.KEYFRAMES,
            Task.INPAINT,
            Task.BLEND,
            Task.DESCRIBE,
        )

    @property
    def needs_video(self) -> bool:
        """Whether the task takes an input video (an /animate may take one too: Extend)."""
        return self in (Task.RESTYLE, Task.SMOOTH, Task.UPSCALE_VIDEO)

    @property
    def is_edit(self) -> bool:
        """Whether the task edits its input images (``generation.editing``, ``describe``)."""
        return self in (Task.INPAINT, Task.BLEND, Task.DESCRIBE)

    @property
    def is_video(self) -> bool:
        """Whether the task makes a video."""
        return self in (
            Task.VIDEO,
            Task.ANIMATE,
            Task.RESTYLE,
            Task.KEYFRAMES,
            Task.SMOOTH,
            Task.UPSCALE_VIDEO,
        )

    @property
    def is_command(self) -> bool:
        """Whether users name it as a command (``/upscale_video`` is only a button's task)."""
        return self != Task.UPSCALE_VIDEO

    @property
    def command(self) -> str:
        """The command a user reads it as: a video's Upscale is ``upscale``, others their own."""
        return Task.UPSCALE.value if self == Task.UPSCALE_VIDEO else self.value


class ModelSpec(BaseModel):
    """One model a deployment serves: where it comes from, its limits and its cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str = Field(description="pipeline family, e.g. zimage, flux2_klein, wan22, ltx")
    description: str = ""
    tasks: tuple[Task, ...]
    pipelines: dict[Task, str] = Field(description="task -> diffusers pipeline class name")
    source: str = Field(description='hub id, local folder, or "tiny" for the offline build')
    dtype: str = "bfloat16"
    component_dtypes: dict[str, str] = Field(
        default_factory=dict,
        description='per-component dtype over ``dtype``, e.g. {vae = "float32"}',
    )
    steps_default: int = Field(ge=1)
    steps_max: int = Field(ge=1)
    guidance_default: float = Field(ge=0)
    guidance_min: float = Field(default=0.0, ge=0)
    guidance_max: float = Field(default=20.0, ge=0)
    width: int = Field(ge=8)
    height: int = Field(ge=8)
    min_side: int = Field(default=64, ge=8)
    max_side: int = Field(default=2048, ge=8)
    size_multiple: int = Field(default=16, ge=1)
    frames_default: int = Field(default=1, ge=1)
    frames_max: int = Field(default=1, ge=1)
    frame_step: int = Field(default=4, ge=1, description="valid frame counts are k*step + 1")
    fps_default: int = Field(default=16, ge=1)
    fps_min: int = Field(default=4, ge=1)
    fps_max: int = Field(default=30, ge=1)
    strength_default: float | None = Field(
        default=None, gt=0, le=1, description="image-to-image strength; None: not supported"
    )
    restyle_strength: float = Field(
        default=0.7, gt=0, le=1, description="/restyle strength: how far from the input clip"
    )
    vary_subtle: float = Field(default=0.35, ge=0.05, le=1, description="Vary (subtle) strength")
    vary_strong: float = Field(default=0.75, ge=0.05, le=1, description="Vary (strong) strength")
    supports_negative: bool = True
    negative_default: str = Field(
        default="", description="the negative prompt used when the user gives none"
    )
    preview_vae: str | None = Field(
        default=None,
        description='step previews by an AutoencoderTiny: hub id, folder, or "tiny"',
    )
    cost_weight: float = Field(
        default=1.0, gt=0, description="credits for one 512x512 frame at the default steps"
    )
    # Speed options (reelbot.generation.speed), each off by default: they change the output.
    quantize: Literal["fp8"] | None = Field(
        default=None, description="fp8: torchao float8 on Ada/Hopper, else layerwise casting"
    )
    cache: Literal["first_block", "mag", "taylorseer"] | None = Field(
        default=None, description="a diffusers cache hook on the denoiser"
    )
    cache_threshold: float | None = Field(
        default=None, gt=0, le=1, description="first_block and mag: the skip threshold"
    )
    cache_interval: int | None = Field(
        default=None, ge=2, description="taylorseer: steps between full computations"
    )
    cache_mag_ratios: tuple[float, ...] | None = Field(
        default=None, description="mag: the checkpoint's magnitude ratios, one per step"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        _check_cache(self)
        for task in self.tasks:
            if task not in self.pipelines:
                raise ValueError(f"model {self.name}: no pipeline class for task {task}")
        if self.steps_default > self.steps_max:
            raise ValueError(f"model {self.name}: steps_default above steps_max")
        if not self.guidance_min <= self.guidance_default <= self.guidance_max:
            raise ValueError(f"model {self.name}: guidance_default outside its range")
        if self.frames_default > self.frames_max:
            raise ValueError(f"model {self.name}: frames_default above frames_max")
        if self.negative_default and not self.supports_negative:
            raise ValueError(f"model {self.name}: negative_default without supports_negative")
        return self

    @property
    def makes_video(self) -> bool:
        """Whether this model serves a video task."""
        return any(t.is_video for t in self.tasks)

    def valid_frames(self, frames: int) -> int:
        """The nearest frame count this model accepts (k * frame_step + 1), within its max."""
        k = max(0, round((frames - 1) / self.frame_step))
        best = k * self.frame_step + 1
        while best > self.frames_max:
            best -= self.frame_step
        return max(1, best)

    def estimate_cost(
        self, *, width: int, height: int, steps: int, frames: int = 1, count: int = 1
    ) -> float:
        """Credits for one job: the weight scaled by pixels, steps and frames, times the images
        of a grid (``count``)."""
        pixels = (width * height) / (512 * 512)
        one = round(self.cost_weight * pixels * (steps / self.steps_default) * frames, 2)
        # Rounded per image first: a grid costs exactly n times what one image costs.
        return round(one * count, 2)


def _check_cache(spec: ModelSpec) -> None:
    """Refuse cache settings that do not go with the chosen cache kind."""
    name, kind = spec.name, spec.cache
    if spec.cache_threshold is not None and kind not in ("first_block", "mag"):
        raise ValueError(f"model {name}: cache_threshold is for cache = first_block or mag")
    if spec.cache_interval is not None and kind != "taylorseer":
        raise ValueError(f"model {name}: cache_interval is for cache = taylorseer")
    if spec.cache_mag_ratios is not None and kind != "mag":
        raise ValueError(f"model {name}: cache_mag_ratios is for cache = mag")
    if kind == "mag" and not spec.cache_mag_ratios:
        # diffusers' MagCacheConfig refuses to run without them (they are per checkpoint).
        raise ValueError(
            f"model {name}: cache = mag needs cache_mag_ratios, the checkpoint's magnitude "
            "ratios (MagCache's calibration run prints them)"
        )


class UpscalerSpec(BaseModel):
    """A super-resolution network (``[upscalers.NAME]``): its weights, its factor, its cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    weights: str = Field(description='"hf:OWNER/REPO/FILE", a local .pth/.safetensors, "tiny"')
    scale: int = Field(ge=2, le=8, description="the network's own factor")
    tile: int = Field(default=256, ge=16, description="input pixels a side per tile")
    tile_overlap: int = Field(default=32, ge=0, description="pixels neighbouring tiles share")
    creative_strength: float = Field(
        default=0.3, gt=0, le=1, description="img2img strength of --creative's hires pass"
    )
    cost_weight: float = Field(
        default=0.05, gt=0, description="credits per 512x512 of output (creative adds the model's)"
    )

    def estimate_cost(self, *, width: int, height: int) -> float:
        """Credits for the super-resolution pass, from the output's pixels."""
        return round(self.cost_weight * width * height / (512 * 512), 2)


class StylePreset(BaseModel):
    """A named style: a prompt template, a negative prompt and a default strength."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    template: str = Field(default="{prompt}", description="must contain {prompt}")
    negative: str = ""
    strength: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _has_placeholder(self) -> StylePreset:
        if "{prompt}" not in self.template:
            raise ValueError(f"style {self.name}: template must contain {{prompt}}")
        return self

    def apply(self, prompt: str) -> str:
        """The prompt wrapped in this style's template."""
        return self.template.replace("{prompt}", prompt)


class Catalog(BaseModel):
    """The models and styles one deployment serves."""

    model_config = ConfigDict(frozen=True)

    set_name: str
    models: dict[str, ModelSpec]
    styles: dict[str, StylePreset] = Field(default_factory=dict)
    defaults: dict[Task, str] = Field(default_factory=dict)
    upscalers: dict[str, UpscalerSpec] = Field(default_factory=dict)

    def upscaler(self, name: str | None = None) -> UpscalerSpec:
        """The named upscaler, or the default one (``[defaults] upscale``, else the first)."""
        if not self.upscalers:
            raise UnknownModel("This deployment serves no upscaler for /upscale.")
        if name is None:
            name = self.defaults.get(Task.UPSCALE) or next(iter(self.upscalers))
        try:
            return self.upscalers[name]
        except KeyError:
            names = ", ".join(sorted(self.upscalers))
            raise UnknownModel(
                f"There is no upscaler called {_named(name)}. Upscalers: {names}."
            ) from None

    def get(self, name: str) -> ModelSpec:
        """A model by name, or a user error that lists what exists."""
        try:
            return self.models[name]
        except KeyError:
            names = ", ".join(sorted(self.models))
            raise UnknownModel(
                f"There is no model called {_named(name)}. Available: {names}."
            ) from None

    def for_task(self, task: Task) -> list[ModelSpec]:
        """Every model serving a task, the default first."""
        found = [m for m in self.models.values() if task in m.tasks]
        default = self.defaults.get(task)
        return sorted(found, key=lambda m: (m.name != default, m.name))

    def default_for(self, task: Task) -> ModelSpec:
        """The model a task uses when none is named."""
        models = self.for_task(task)
        if not models:
            raise UnknownModel(f"This deployment serves no model for /{task.value}.")
        return models[0]

    def pick(self, task: Task, name: str | None) -> ModelSpec:
        """The named model (checked against the task) or the task's default."""
        if name is None:
            return self.default_for(task)
        model = self.get(name)
        if task not in model.tasks:
            others = ", ".join(m.name for m in self.for_task(task)) or "none"
            raise UnknownModel(
                f"Model {_named(name)} does not do /{task.value}. "
                f"Models for /{task.value}: {others}."
            )
        return model


BUILTIN_SETS = ("tiny", "default", "default-80gb", "fast")


def _read_toml(path: Path | None, builtin: str | None = None) -> dict[str, Any]:
    try:
        if builtin is not None:
            text = resources.files("reelbot.data").joinpath(builtin).read_text("utf-8")
        else:
            assert path is not None
            text = path.read_text("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"REELBOT_MODELS: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"REELBOT_MODELS: {path or builtin} is not valid TOML: {exc}") from exc


def _parse(set_name: str, data: Mapping[str, Any], base_dir: Path | None) -> Catalog:
    try:
        models: dict[str, ModelSpec] = {}
        for name, raw in dict(data.get("models", {})).items():
            entry = dict(raw)
            source = str(entry.get("source", ""))
            if base_dir is not None and source.startswith(("./", "../")):
                entry["source"] = str((base_dir / source).resolve())
            models[name] = ModelSpec(name=name, **entry)
        styles = {
            name: StylePreset(name=name, **dict(raw))
            for name, raw in dict(data.get("styles", {})).items()
        }
        defaults = {Task(k): str(v) for k, v in dict(data.get("defaults", {})).items()}
        upscalers = {
            name: UpscalerSpec(name=name, **_local_weights(dict(raw), base_dir))
            for name, raw in dict(data.get("upscalers", {})).items()
        }
    except (ValidationError, ValueError, TypeError) as exc:
        detail = "; ".join(str(exc).splitlines()[0:3])
        raise ConfigError(f"REELBOT_MODELS: invalid model set {set_name!r}: {detail}") from None
    for task, name in defaults.items():
        if task == Task.UPSCALE:
            if name not in upscalers:
                raise ConfigError(f"REELBOT_MODELS: default upscaler {name!r} is not defined")
            continue
        if name not in models or task not in models[name].tasks:
            raise ConfigError(f"REELBOT_MODELS: default {name!r} for {task} is not a model for it")
    if not models:
        raise ConfigError(f"REELBOT_MODELS: model set {set_name!r} defines no models")
    return Catalog(
        set_name=set_name, models=models, styles=styles, defaults=defaults, upscalers=upscalers
    )


def _local_weights(entry: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """An upscaler entry with a relative ``weights`` path made absolute to its TOML file."""
    weights = str(entry.get("weights", ""))
    if base_dir is not None and weights.startswith(("./", "../")):
        entry["weights"] = str((base_dir / weights).resolve())
    return entry


def load_catalog(models: str, extra_styles: Path | None = None) -> Catalog:
    """Load a built-in model set (``tiny``, ``default``) or a TOML file of models.

    Styles come from the shipped ``styles.toml``, then the model file's own ``[styles]``, then
    ``extra_styles`` (an admin's file); later definitions replace earlier ones of the same name.
    """
    if models in BUILTIN_SETS:
        data = _read_toml(None, builtin=f"models_{models}.toml")
        catalog = _parse(models, data, None)
    else:
        path = Path(models).expanduser()
        catalog = _parse(path.stem, _read_toml(path), path.parent)
    styles = dict(_parse_styles(_read_toml(None, builtin="styles.toml")))
    styles.update(catalog.styles)
    if extra_styles is not None:
        styles.update(_parse_styles(_read_toml(extra_styles)))
    return catalog.model_copy(update={"styles": styles})


def _parse_styles(data: Mapping[str, Any]) -> dict[str, StylePreset]:
    try:
        return {
            name: StylePreset(name=name, **dict(raw))
            for name, raw in dict(data.get("styles", {})).items()
        }
    except (ValidationError, TypeError) as exc:
        raise ConfigError(f"styles: invalid style preset: {str(exc).splitlines()[0]}") from exc


def _named(name: str) -> str:
    """A name the user typed, quoted for an answer and cut short: it may be any length."""
    return repr(name if len(name) <= 40 else name[:39] + "…")
