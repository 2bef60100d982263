"""Platform-neutral requests and outcomes, and the one option grammar every adapter uses.

A chat command becomes a ``GenerationRequest`` (what the user typed, plus explicit options from a
platform's own form fields); ``resolve`` turns it into ``GenerationParams`` against the catalog:
every value chosen and checked against the model's limits. Nothing is clamped silently.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import unicodedata
from enum import StrEnum
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reelbot import masks
from reelbot.catalog import Catalog, ModelSpec, Task
from reelbot.errors import InvalidOption, InvalidPrompt, MissingImage, MissingVideo

__all__ = [
    "MAX_COUNT",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "GenerationParams",
    "GenerationRequest",
    "JobStatus",
    "Options",
    "ReplyAddress",
    "Requester",
    "Task",
    "check_prompt_text",
    "job_id_for",
    "parse_prompt",
    "resolve",
    "seed_for",
]

MAX_PROMPT_CHARS = 1500
MAX_RAW_CHARS = 4000
MAX_SEED = 2**32 - 1
MAX_ASPECT = 4.0
MAX_COUNT = 4
UPSCALE_MAX_SIDE = 4096
"""The long side /upscale stops at unless the deployment says otherwise."""
UPSCALE_SCALES = (2, 4)
"""The most images one command makes (``--n``): a 2×2 grid."""


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    ENCODING = "encoding"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self in (JobStatus.DELIVERED, JobStatus.FAILED, JobStatus.CANCELLED)


class Requester(BaseModel):
    """Who asked: platform, user, and the server (guild or group chat) it came from."""

    model_config = ConfigDict(frozen=True)

    platform: str
    user_id: str
    server_id: str | None = None
    role_ids: tuple[str, ...] = ()
    display_name: str = ""
    is_admin: bool = False
    """An admin of ``server_id`` (Discord Manage Server, a Telegram group administrator)."""
    is_owner: bool = False
    """One of the deployment's owners (``REELBOT_OWNER_IDS``): rights in every server."""


class ReplyAddress(BaseModel):
    """Where the result goes: enough for the platform process to post it, and nothing secret."""

    model_config = ConfigDict(frozen=True)

    platform: str
    channel_id: str
    message_id: str | None = None
    status_message_id: str | None = None
    thread_id: str | None = None
    interaction_token: str | None = None
    interaction_expires_at: float | None = None
    nsfw_channel: bool = False
    extra: dict[str, str] = Field(default_factory=dict)


class Options(BaseModel):
    """Generation options, from flags in the prompt or a platform's own option fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    negative: str | None = None
    seed: int | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    model: str | None = None
    strength: float | None = None
    duration: float | None = None
    fps: int | None = None
    style: str | None = None
    n: int | None = None
    scale: int | None = None
    creative: bool | None = None
    zoom: float | None = None
    """/inpaint: zoom out by 1.5 or 2, the source in the centre (``masks.ZOOM_SCALES``)."""
    pan: str | None = None
    """/inpaint: extend the image left, right, up or down (``masks.PAN_DIRECTIONS``)."""
    extend: str | None = None
    """/animate --extend JOB: continue that job's video (the chat fetches it)."""


class GenerationRequest(BaseModel):
    """What the user asked for, as typed: the prompt text with flags, and explicit options."""

    model_config = ConfigDict(frozen=True)

    task: Task
    text: str = ""
    options: Options = Field(default_factory=Options)
    image_ref: str | None = Field(default=None, description="where the input image is stored")
    video_ref: str | None = Field(
        default=None,
        description="the input clip: /restyle's, /smooth's, or the one Extend continues",
    )
    mask_ref: str | None = Field(default=None, description="/inpaint's mask (white = change)")
    more_refs: tuple[str, ...] = Field(
        default=(), description="/blend's images after the first; /keyframes' last image"
    )
    requester: Requester
    reply: ReplyAddress
    source_id: str = Field(description="the platform's own update/interaction id")


class GenerationParams(BaseModel):
    """Every value a pipeline call needs, resolved and checked."""

    model_config = ConfigDict(frozen=True)

    task: Task
    model: str
    prompt: str
    negative_prompt: str = ""
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    strength: float | None = None
    frames: int = 1
    fps: int | None = None
    style: str | None = None
    aspect: str | None = Field(default=None, description="the ratio asked for, e.g. 16:9")
    cost: float = 0.0
    count: int = Field(default=1, description="images in one call (a grid), seeds seed…seed+n-1")
    upscale_model: str | None = Field(
        default=None, description="/upscale --creative: the image model of the img2img pass"
    )
    zoom: float | None = Field(default=None, description="/inpaint: a zoom out by this factor")
    pan: str | None = Field(default=None, description="/inpaint: a pan in this direction")

    def summary(self) -> str:
        """The parameters a user needs to reproduce the result, as flags."""
        parts = [f"--model {self.model}", f"--seed {self.seed}", f"--steps {self.steps}"]
        # The size is rounded to the model's multiple; the ratio asked for reproduces it and
        # reads better than the reduced fraction of the rounded size.
        g = math.gcd(self.width, self.height)
        parts.append(f"--ar {self.aspect or f'{self.width // g}:{self.height // g}'}")
        parts.append(f"--guidance {self.guidance:g}")
        if self.strength is not None:
            parts.append(f"--strength {self.strength:g}")
        if self.task.is_video and self.fps:
            parts.append(f"--duration {self.frames / self.fps:.2g} --fps {self.fps}")
        if self.style:
            parts.append(f"--style {self.style}")
        if self.count > 1:
            parts.append(f"--n {self.count}")
        return " ".join(parts)


def job_id_for(platform: str, source_id: str) -> str:
    """A job id derived from the platform's own id, so a duplicated update maps to one job."""
    digest = hashlib.sha256(f"{platform}:{source_id}".encode()).hexdigest()[:16]
    return f"{platform[:2]}{digest}"


def seed_for(job_id: str) -> int:
    """The default seed of a job: derived from its id, so a re-run of the same job gives the same
    image. The one formula every platform and the queue use."""
    return int(job_id[-8:], 16) % (MAX_SEED + 1)


# -- the option grammar -----------------------------------------------------------------------

_FLAG_ALIASES = {
    "no": "negative",
    "negative": "negative",
    "neg": "negative",
    "seed": "seed",
    "ar": "aspect",
    "aspect": "aspect",
    "steps": "steps",
    "guidance": "guidance",
    "cfg": "guidance",
    "model": "model",
    "strength": "strength",
    "duration": "duration",
    "fps": "fps",
    "style": "style",
    "n": "n",
    "scale": "scale",
    "creative": "creative",
    "extend": "extend",
}
_MULTI_WORD = {"negative"}
_SWITCHES = {"creative"}
"""Flags that take no value: ``--creative``."""
# Phones turn "--" into an em or en dash; Midjourney accepts both, so do we.
_FLAG_RE = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)([^\s]*)")
_ASPECT_RE = re.compile(r"^(\d{1,3})\s*[:x×/]\s*(\d{1,3})$")


def _clean(text: str) -> str:
    """NFC-normalise, turn control characters into spaces and collapse whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    return " ".join(text.split())


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(_FLAG_ALIASES), n=1, cutoff=0.6)
    return f" Did you mean --{close[0]}?" if close else ""


def _known_flags() -> str:
    return (
        "--ar, --seed, --no, --steps, --guidance, --model, --strength, --duration, --fps, "
        "--style, --n, --scale, --creative, --extend"
    )


def parse_prompt(text: str) -> tuple[str, Options]:
    """Split Midjourney-style flags out of a prompt: ``"a fox --ar 16:9 --seed 7"``.

    A flag takes one word as its value; ``--no`` takes every word up to the next flag. Words
    after a one-word value go back into the prompt. Values stay strings until ``resolve``
    checks them against the model, except where their type alone is wrong.
    """
    if len(text) > MAX_RAW_CHARS:
        raise InvalidPrompt(
            f"That message is {len(text)} characters long; keep the prompt and its flags under "
            f"{MAX_RAW_CHARS} (the prompt itself under {MAX_PROMPT_CHARS})."
        )
    text = _clean(text)
    matches = list(_FLAG_RE.finditer(text))
    prompt_parts = [text[: matches[0].start()] if matches else text]
    values: dict[str, str] = {}
    for i, match in enumerate(matches):
        raw_name = match.group(1)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        rest = text[match.end() : end].strip()
        if not raw_name:
            raise InvalidOption(
                f"A lone '--' is not a flag. Flags look like --seed 42. Known flags: "
                f"{_known_flags()}.",
                option="--",
            )
        name = _FLAG_ALIASES.get(raw_name.lower())
        if name is None:
            raise InvalidOption(
                f"Unknown flag --{raw_name[:40]}.{_suggest(raw_name)} Known flags: "
                f"{_known_flags()}.",
                option=f"--{raw_name[:40]}",
            )
        if name in values:
            raise InvalidOption(f"--{raw_name} is given twice; give it once.", option=name)
        if name in _SWITCHES:
            value, leftover = "on", rest
        elif name in _MULTI_WORD:
            value, leftover = rest, ""
        else:
            value, _, leftover = rest.partition(" ")
        if not value:
            raise InvalidOption(f"--{raw_name} needs a value, e.g. {_example(name)}.", option=name)
        values[name] = value
        if leftover:
            prompt_parts.append(leftover)
    prompt = " ".join(p.strip() for p in prompt_parts if p.strip())
    return prompt, _typed_options(values)


def check_prompt_text(prompt: str) -> None:
    """Refuse a prompt (flags already taken out) with no words: only emoji or punctuation.

    Raises:
        InvalidPrompt: the prompt has no letters or digits to describe a picture with.
    """
    if prompt.strip() and not any(unicodedata.category(c)[0] in ("L", "N") for c in prompt):
        raise InvalidPrompt(
            "Describe what you want in words (English works best with most models), "
            "e.g. /imagine a red fox in the snow"
        )


def _example(name: str) -> str:
    return {
        "negative": "--no text, watermark",
        "seed": "--seed 42",
        "aspect": "--ar 16:9",
        "steps": "--steps 4",
        "guidance": "--guidance 3.5",
        "model": "--model NAME (see /models)",
        "strength": "--strength 0.6",
        "duration": "--duration 4",
        "fps": "--fps 24",
        "style": "--style anime",
        "n": "--n 4",
        "scale": "--scale 2",
        "creative": "--creative",
    }[name]


def _int(name: str, value: str) -> int:
    if not re.fullmatch(r"[+]?\d{1,12}", value.strip()):
        raise InvalidOption(
            f"--{_flag(name)} must be a whole number, e.g. {_example(name)}; got {value[:30]!r}.",
            option=name,
        )
    return int(value)


def _float(name: str, value: str) -> float:
    if not re.fullmatch(r"[+]?(\d{1,6}(\.\d{0,6})?|\.\d{1,6})", value.strip()):
        raise InvalidOption(
            f"--{_flag(name)} must be a number, e.g. {_example(name)}; got {value[:30]!r}.",
            option=name,
        )
    return float(value)


def _flag(name: str) -> str:
    return {"negative": "no", "aspect": "ar"}.get(name, name)


def _typed_options(values: dict[str, str]) -> Options:
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("seed", "steps", "fps", "n", "scale"):
            typed[name] = _int(name, value)
        elif name in _SWITCHES:
            typed[name] = True
        elif name in ("guidance", "strength", "duration"):
            typed[name] = _float(name, value)
        else:
            typed[name] = value
    return Options(**typed)


def merge_options(from_text: Options, explicit: Options) -> Options:
    """Flags in the prompt and explicit options together; the same option twice must agree."""
    merged = from_text.model_dump(exclude_none=True)
    for name, value in explicit.model_dump(exclude_none=True).items():
        if name in merged and merged[name] != value:
            raise InvalidOption(
                f"{name} is set twice, to {str(merged[name])[:40]!r} in the prompt and "
                f"{str(value)[:40]!r} as an "
                f"option; keep one.",
                option=name,
            )
        merged[name] = value
    return Options(**merged)


# -- resolution against a model ----------------------------------------------------------------


def _range_error(flag: str, value: object, low: object, high: object, model: str) -> InvalidOption:
    return InvalidOption(
        f"--{flag} {value} is out of range for {model}: use {low} to {high}.", option=flag
    )


def _size_for(spec: ModelSpec, aspect: str | None) -> tuple[int, int]:
    if aspect is None:
        return spec.width, spec.height
    match = _ASPECT_RE.match(aspect.strip())
    if match is None:
        raise InvalidOption(
            f"--ar must look like 16:9 (width:height); got {aspect[:30]!r}.", option="ar"
        )
    aw, ah = int(match.group(1)), int(match.group(2))
    if aw == 0 or ah == 0 or max(aw / ah, ah / aw) > MAX_ASPECT:
        raise InvalidOption(
            f"--ar {aw}:{ah} is out of range: use ratios from 1:4 to 4:1.", option="ar"
        )
    area = spec.width * spec.height
    m = spec.size_multiple
    width = max(m, round(math.sqrt(area * aw / ah) / m) * m)
    height = max(m, round(math.sqrt(area * ah / aw) / m) * m)
    # Keep within the model's sides: scale both down together, never distort the ratio.
    scale = min(1.0, spec.max_side / max(width, height))
    if scale < 1.0:
        width = max(m, int(width * scale) // m * m)
        height = max(m, int(height * scale) // m * m)
    if min(width, height) < spec.min_side:
        raise InvalidOption(
            f"--ar {aw}:{ah} is too narrow for {spec.name}: the short side would be "
            f"{min(width, height)}px, below its {spec.min_side}px minimum.",
            option="ar",
        )
    return width, height


def _ratio_of(size: tuple[int, int]) -> str:
    """An image's aspect as ``W:H``, held within the ratios a model takes (1:4 to 4:1)."""
    ratio = Fraction(max(1, size[0]), max(1, size[1]))
    ratio = min(max(ratio, 1 / Fraction(MAX_ASPECT)), Fraction(MAX_ASPECT))
    ratio = ratio.limit_denominator(249)  # both sides stay within --ar's three digits
    return f"{ratio.numerator}:{ratio.denominator}"


def _normal_aspect(aspect: str | None) -> str | None:
    match = _ASPECT_RE.match(aspect.strip()) if aspect else None
    return f"{int(match.group(1))}:{int(match.group(2))}" if match else None


def resolve(
    task: Task,
    text: str,
    catalog: Catalog,
    *,
    explicit: Options | None = None,
    has_image: bool = False,
    default_seed: int | None = None,
    default_count: int = 1,
    image_size: tuple[int, int] | None = None,
    upscale_max_side: int = UPSCALE_MAX_SIDE,
    has_video: bool = False,
) -> GenerationParams:
    """Parse a prompt's flags, merge explicit options and check each value against the model.

    ``default_seed`` is used when the user gave none (callers derive it from the job id, so a
    re-run of the same job gives the same result). ``default_count`` is the grid size of an
    image job without ``--n`` (the server's or the deployment's default; video ignores it).
    ``image_size`` is the input's upright size (the image's, or the video's for /restyle): the
    result keeps its aspect unless ``--ar`` says otherwise.
    """
    prompt, from_text = parse_prompt(text)
    opts = merge_options(from_text, explicit or Options())
    if task.needs_image and not has_image:
        raise MissingImage(
            f"/{task.value} needs an image: attach one (or reply to one) with the command."
        )
    if task.needs_video and not has_video:
        raise MissingVideo(
            f"/{task.value} needs a video: attach a clip (or reply to one) with the command."
        )
    if opts.extend is not None and not (task == Task.ANIMATE and has_video):
        raise InvalidOption(
            "--extend JOB continues one of your videos: /animate --extend JOB [prompt].",
            option="extend",
        )
    if task == Task.UPSCALE:
        return _resolve_upscale(
            prompt, opts, catalog, image_size, max_side=upscale_max_side, seed=default_seed or 0
        )
    for name in ("scale", "creative"):
        if getattr(opts, name) is not None:
            raise InvalidOption(f"--{name} only applies to /upscale.", option=name)
    if task == Task.SMOOTH:
        return _resolve_smooth(prompt, opts, image_size, seed=default_seed or 0)
    if task == Task.UPSCALE_VIDEO:
        return _resolve_upscale_video(prompt, opts, catalog, image_size, seed=default_seed or 0)
    if task.is_edit:
        return _resolve_edit(
            task, prompt, opts, catalog, image_size, seed=default_seed, count=default_count
        )
    for name in ("zoom", "pan"):
        if getattr(opts, name) is not None:
            raise InvalidOption(f"{name} only applies to /inpaint.", option=name)
    spec = catalog.pick(task, opts.model)

    style = None
    negative = opts.negative or ""
    if opts.style is not None:
        style_name = opts.style.lower()
        if style_name not in catalog.styles:
            close = difflib.get_close_matches(style_name, list(catalog.styles), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise InvalidOption(
                f"Unknown style {opts.style[:40]!r}.{hint} Styles: "
                f"{', '.join(sorted(catalog.styles))}.",
                option="style",
            )
        style = catalog.styles[style_name]

    # An image task may go without a prompt when the image (and a style) says enough.
    if (
        not prompt
        and task not in (Task.ANIMATE, Task.KEYFRAMES)
        and not (task in (Task.REMIX, Task.RESTYLE) and style is not None)
    ):
        raise InvalidPrompt(
            f"/{task.value} needs a prompt, e.g. /{task.value} a red fox in the snow --ar 16:9"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidPrompt(
            f"That prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}."
        )
    check_prompt_text(prompt)
    if negative and not spec.supports_negative:
        raise InvalidOption(
            f"{spec.name} does not use a negative prompt (--no); leave it out or pick another "
            f"model.",
            option="no",
        )
    if style is not None:
        prompt = style.apply(prompt or "this scene")
        if style.negative and spec.supports_negative:
            negative = ", ".join(p for p in (negative, style.negative) if p)

    seed = opts.seed if opts.seed is not None else (default_seed or 0) % (MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise _range_error("seed", opts.seed, 0, MAX_SEED, spec.name)

    steps = opts.steps if opts.steps is not None else spec.steps_default
    if not 1 <= steps <= spec.steps_max:
        raise _range_error("steps", steps, 1, spec.steps_max, spec.name)

    guidance = opts.guidance if opts.guidance is not None else spec.guidance_default
    if spec.guidance_min == spec.guidance_max != guidance:
        # A distilled model (Z-Image-Turbo): one guidance only, so a range would mislead.
        raise InvalidOption(
            f"--guidance {guidance:g} does not apply to {spec.name}: it runs at guidance "
            f"{spec.guidance_max:g} only; leave --guidance out or pick another model.",
            option="guidance",
        )
    if not spec.guidance_min <= guidance <= spec.guidance_max:
        raise _range_error("guidance", guidance, spec.guidance_min, spec.guidance_max, spec.name)

    strength: float | None = None
    if task == Task.REMIX and spec.strength_default is not None:
        strength = opts.strength
        if strength is None:
            strength = style.strength if style and style.strength else spec.strength_default
        if not 0.05 <= strength <= 1.0:
            raise _range_error("strength", strength, 0.05, 1.0, spec.name)
    elif task == Task.RESTYLE:
        strength = opts.strength
        if strength is None:
            strength = style.strength if style and style.strength else spec.restyle_strength
        if not 0.05 <= strength <= 1.0:
            raise _range_error("strength", strength, 0.05, 1.0, spec.name)
        if int(steps * strength) < 1:
            # Video-to-video runs int(steps x strength) of the steps; none is no video at all.
            raise InvalidOption(
                f"--steps {steps} at --strength {strength:g} leaves no step to run: use "
                f"--steps {math.ceil(1 / strength)} or more.",
                option="steps",
            )
    elif opts.strength is not None:
        where = (
            "/remix and /restyle"
            if task != Task.REMIX
            else f"{spec.name} (it edits by reference instead)"
        )
        raise InvalidOption(f"--strength only applies to {where}.", option="strength")

    if opts.aspect is None and (task.needs_image or task.needs_video) and image_size is not None:
        # /remix and /animate keep the input's shape: the nearest size the model allows.
        width, height = _size_for(spec, _ratio_of(image_size))
    else:
        width, height = _size_for(spec, opts.aspect)

    frames, fps = 1, None
    if task.is_video:
        fps = opts.fps if opts.fps is not None else spec.fps_default
        if not spec.fps_min <= fps <= spec.fps_max:
            raise _range_error("fps", fps, spec.fps_min, spec.fps_max, spec.name)
        if opts.duration is not None:
            shortest = (spec.frame_step + 1) / fps
            longest = spec.frames_max / fps
            if not shortest - 1e-9 <= opts.duration <= longest + 1e-9:
                raise _range_error(
                    "duration", opts.duration, f"{shortest:.2g}", f"{longest:.3g}", spec.name
                )
            frames = spec.valid_frames(round(opts.duration * fps))
        else:
            frames = spec.frames_default
    else:
        for name in ("duration", "fps"):
            if getattr(opts, name) is not None:
                raise InvalidOption(f"--{name} only applies to /video and /animate.", option=name)

    count = _count_for(task, opts.n, default_count)
    cost = spec.estimate_cost(width=width, height=height, steps=steps, frames=frames, count=count)
    return GenerationParams(
        task=task,
        model=spec.name,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        seed=seed,
        strength=strength,
        frames=frames,
        fps=fps,
        style=style.name if style else None,
        aspect=_normal_aspect(opts.aspect),
        cost=cost,
        count=count,
    )


BLEND_IMAGES = (2, 4)
"""How many images /blend takes: at least, at most."""
BLEND_PROMPT = "one picture that combines the reference images"
"""What /blend asks for when the user gives no prompt."""
EXTEND_PROMPT = "the same scene, extended beyond its edges"
"""What a zoom out or a pan asks for when the user gives no prompt."""
_DESCRIBE_OPTIONS = ("model", "seed")


def check_image_count(task: Task, count: int) -> None:
    """Refuse a /blend of fewer than 2 or more than 4 images (other tasks take one)."""
    low, high = BLEND_IMAGES if task == Task.BLEND else (1, 1)
    if not low <= count <= high:
        raise MissingImage(
            f"/blend combines {low} to {high} images; this came with {count}."
            if task == Task.BLEND
            else f"/{task.value} takes one image; this came with {count}."
        )


def _resolve_edit(
    task: Task,
    prompt: str,
    opts: Options,
    catalog: Catalog,
    image_size: tuple[int, int] | None,
    *,
    seed: int | None,
    count: int,
) -> GenerationParams:
    """/inpaint (with zoom or pan), /blend and /describe: the model for the task, then the
    checks of an /imagine on it (style, negative, seed, steps, guidance, --n), then the size
    and the strength of the edit."""
    spec = catalog.pick(task, opts.model)
    if task == Task.DESCRIBE:
        return _resolve_describe(prompt, opts, spec, seed, image_size)
    outpaint = opts.zoom is not None or opts.pan is not None
    if task == Task.INPAINT:
        _check_outpaint(opts)
    elif outpaint:
        raise InvalidOption("zoom and pan only apply to /inpaint.", option="zoom")
    if task == Task.BLEND and opts.strength is not None:
        raise InvalidOption("--strength does not apply to /blend.", option="strength")
    if not prompt and task == Task.INPAINT and not outpaint:
        raise InvalidPrompt(
            "/inpaint needs a prompt: what to paint in the masked area, e.g. /inpaint a red hat"
        )
    if not prompt:
        prompt = BLEND_PROMPT if task == Task.BLEND else EXTEND_PROMPT
    base = resolve(
        Task.IMAGINE,
        prompt,
        catalog.model_copy(update={"models": {**catalog.models, spec.name: _imagines(spec)}}),
        explicit=opts.model_copy(
            update={"model": spec.name, "strength": None, "zoom": None, "pan": None}
        ),
        default_seed=seed,
        default_count=count,
    )
    width, height = base.width, base.height
    if image_size is not None and opts.aspect is None and task == Task.INPAINT:
        # An edit keeps the input's own size where the model can make it, so the pixels
        # outside the mask are the source's own.
        width, height = _edit_size(spec, image_size)
    if outpaint:
        width, height = masks.outpaint_size(
            width,
            height,
            zoom=opts.zoom,
            pan=opts.pan,
            max_side=spec.max_side,
            multiple=spec.size_multiple,
        )
        if max(width / height, height / width) > MAX_ASPECT:
            raise InvalidOption(
                f"That pan would make a {width}x{height} image, past the 4:1 limit; pan the "
                f"other way or zoom out instead.",
                option="pan",
            )
    strength = None
    if task == Task.INPAINT:
        # The masked area is redrawn from noise unless asked otherwise (a border is empty).
        strength = 1.0 if opts.strength is None or outpaint else opts.strength
        if not 0.05 <= strength <= 1.0:
            raise _range_error("strength", strength, 0.05, 1.0, spec.name)
    cost = spec.estimate_cost(width=width, height=height, steps=base.steps, count=base.count)
    return base.model_copy(
        update={
            "task": task,
            "width": width,
            "height": height,
            "strength": strength,
            "cost": cost,
            "zoom": opts.zoom,
            "pan": opts.pan,
        }
    )


def _edit_size(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, int]:
    """An input's own size in the model's multiple, scaled (ratio kept) into its sides."""
    width, height = size
    scale = min(1.0, spec.max_side / max(width, height))
    scale = max(scale, spec.min_side / max(1, min(width, height)))
    m = spec.size_multiple
    return (
        min(spec.max_side, max(m, round(width * scale / m) * m)),
        min(spec.max_side, max(m, round(height * scale / m) * m)),
    )


def _imagines(spec: ModelSpec) -> ModelSpec:
    """``spec`` as a model that serves /imagine, so /imagine's checks run on it."""
    if Task.IMAGINE in spec.tasks:
        return spec
    return spec.model_copy(update={"tasks": (*spec.tasks, Task.IMAGINE)})


def _check_outpaint(opts: Options) -> None:
    if opts.zoom is not None and opts.pan is not None:
        raise InvalidOption("Zoom out or pan, not both at once.", option="zoom")
    if opts.zoom is not None and opts.zoom not in masks.ZOOM_SCALES:
        offered = " or ".join(f"{z:g}" for z in masks.ZOOM_SCALES)
        raise InvalidOption(
            f"Zoom {opts.zoom:g} is not offered: zoom out {offered}.", option="zoom"
        )
    if opts.pan is not None and opts.pan not in masks.PAN_DIRECTIONS:
        raise InvalidOption(
            f"Pan {opts.pan[:20]!r} is not a direction: use {', '.join(masks.PAN_DIRECTIONS)}.",
            option="pan",
        )
    if (opts.zoom is not None or opts.pan is not None) and opts.aspect is not None:
        raise InvalidOption(
            "--ar does not apply to a zoom or a pan: the canvas grows from the image's shape.",
            option="ar",
        )


def _resolve_describe(
    prompt: str,
    opts: Options,
    spec: ModelSpec,
    seed: int | None,
    image_size: tuple[int, int] | None,
) -> GenerationParams:
    """/describe: an image and, at most, --model and --seed (the suggestions' sampling). Its
    result is the image itself with the suggestions, so the size is the image's."""
    if prompt:
        raise InvalidPrompt("/describe takes an image and no prompt: it writes the prompts.")
    for name in opts.model_dump(exclude_none=True):
        if name not in _DESCRIBE_OPTIONS:
            raise InvalidOption(
                f"--{_flag(name)} does not apply to /describe; it takes --model and --seed.",
                option=_flag(name),
            )
    chosen = opts.seed if opts.seed is not None else (seed or 0) % (MAX_SEED + 1)
    if not 0 <= chosen <= MAX_SEED:
        raise _range_error("seed", chosen, 0, MAX_SEED, spec.name)
    return GenerationParams(
        task=Task.DESCRIBE,
        model=spec.name,
        prompt="",
        width=image_size[0] if image_size else spec.width,
        height=image_size[1] if image_size else spec.height,
        steps=spec.steps_default,
        guidance=spec.guidance_default,
        seed=chosen,
        cost=spec.cost_weight,
    )


SMOOTH_MODEL = "minterpolate"
"""What /smooth runs: ffmpeg's motion interpolation (``generation.video_frames``), no model."""
SMOOTH_COST = 0.1
"""Credits for /smooth: CPU work beside the GPU, a tenth of a 512×512 image."""


def _resolve_smooth(
    prompt: str, opts: Options, image_size: tuple[int, int] | None, *, seed: int
) -> GenerationParams:
    """/smooth: a clip and nothing else; the worker doubles its frames at twice the rate."""
    _clip_only(
        prompt,
        opts,
        no_prompt="/smooth takes a video and no prompt: it only adds frames.",
        no_option="--{flag} does not apply to /smooth; it takes no options.",
    )
    return _one_pass(Task.SMOOTH, SMOOTH_MODEL, image_size or (0, 0), seed, cost=SMOOTH_COST)


def _clip_only(prompt: str, opts: Options, *, no_prompt: str, no_option: str) -> None:
    """Refuse a prompt (``no_prompt``) or any option (``no_option``, with its ``{flag}``) given
    to an edit that takes a clip and nothing else."""
    if prompt:
        raise InvalidPrompt(no_prompt)
    if given := opts.model_dump(exclude_none=True):
        flag = _flag(next(iter(given)))
        raise InvalidOption(no_option.format(flag=flag), option=flag)


def _one_pass(
    task: Task, model: str, size: tuple[int, int], seed: int, *, cost: float = 0.0
) -> GenerationParams:
    """The parameters of a clip edit with no prompt and no denoising schedule."""
    width, height = size
    return GenerationParams(
        task=task,
        model=model,
        prompt="",
        width=width,
        height=height,
        steps=1,
        guidance=0.0,
        seed=seed % (MAX_SEED + 1),
        cost=cost,
    )


VIDEO_UPSCALE = 2
"""A video result's Upscale: every frame ×2 (the image's subtle Upscale; no ×4 of a clip)."""
VIDEO_UPSCALE_MAX_SIDE = 2048
"""The long side an upscaled clip may reach: twice the 1024 the worker decodes the clips it
edits at (``clips.CLIP_MAX_SIDE``); a clip between the two is upscaled to it, less than ×2,
and one already as long is refused (as ``/upscale`` treats images at ``upscale_max_side``)."""


def _resolve_upscale_video(
    prompt: str,
    opts: Options,
    catalog: Catalog,
    image_size: tuple[int, int] | None,
    *,
    seed: int,
) -> GenerationParams:
    """A video result's Upscale: the clip (``image_size``, its upright size; without it, a check
    before the clip is read, the size is 0) twice as large by the deployment's upscaler, its
    long side at most ``VIDEO_UPSCALE_MAX_SIDE``. The size it is decoded at, its frames, rate
    and cost follow from the clip's header: ``clips.upscale_clip_params``.

    Raises:
        InvalidOption: the clip is already ``VIDEO_UPSCALE_MAX_SIDE`` long.
    """
    _clip_only(
        prompt,
        opts,
        no_prompt="Upscale takes a video and no prompt: it only enlarges the frames.",
        no_option="--{flag} does not apply to a video's Upscale.",
    )
    upscaler = catalog.upscaler()
    width, height = image_size or (0, 0)
    if max(width, height) >= VIDEO_UPSCALE_MAX_SIDE:
        raise InvalidOption(
            f"This video is already {width}x{height}; upscaled videos here stop at "
            f"{VIDEO_UPSCALE_MAX_SIDE} pixels on the long side.",
            option="scale",
        )
    size = _upscaled_size(image_size, VIDEO_UPSCALE, VIDEO_UPSCALE_MAX_SIDE)
    return _one_pass(Task.UPSCALE_VIDEO, upscaler.name, size, seed)


def _count_for(task: Task, n: int | None, default: int) -> int:
    """How many images: ``--n`` (1 to 4, images only), else the default (1 for video)."""
    if n is None:
        return 1 if task.is_video else max(1, min(MAX_COUNT, default))
    if task.is_video:
        raise InvalidOption(
            f"--n only applies to images; /{task.value} makes one video at a time.", option="n"
        )
    if not 1 <= n <= MAX_COUNT:
        raise InvalidOption(
            f"--n {n} is out of range: use 1 to {MAX_COUNT} images (--n 4 makes a 2×2 grid).",
            option="n",
        )
    return n


_NOT_FOR_UPSCALE = ("aspect", "steps", "guidance", "strength", "duration", "fps", "style", "n")


def _resolve_upscale(
    prompt: str,
    opts: Options,
    catalog: Catalog,
    image_size: tuple[int, int] | None,
    *,
    max_side: int,
    seed: int,
) -> GenerationParams:
    """``/upscale``: the output size (the image's × ``--scale``, its long side at most
    ``max_side``) and, for ``--creative``, the image model of the img2img pass.

    ``image_size`` is the input's (width, height); without it (a check before the image is
    read) the size and the cost are 0. A prompt only guides ``--creative``.
    """
    for name in _NOT_FOR_UPSCALE:
        if getattr(opts, name) is not None:
            flag = _flag(name)
            raise InvalidOption(
                f"--{flag} does not apply to /upscale (it keeps the image as it is); "
                f"use --scale 2|4 and --creative.",
                option=flag,
            )
    scale = opts.scale if opts.scale is not None else UPSCALE_SCALES[0]
    if scale not in UPSCALE_SCALES:
        raise InvalidOption(
            f"--scale {scale} is not offered: use --scale 2 or --scale 4.", option="scale"
        )
    creative = bool(opts.creative)
    upscaler_name = opts.model if opts.model in catalog.upscalers else None
    upscaler = catalog.upscaler(upscaler_name)
    model = None
    if creative:
        model = catalog.pick(Task.REMIX, None if upscaler_name else opts.model)
        if model.strength_default is None:
            raise InvalidOption(
                f"{model.name} has no img2img pass for --creative; pick another --model.",
                option="model",
            )
    elif opts.model is not None and upscaler_name is None:
        raise InvalidOption(
            f"--model {opts.model[:40]} names an image model: it only applies with --creative "
            f"(upscalers: {', '.join(sorted(catalog.upscalers))}).",
            option="model",
        )
    # A prompt is kept with the job (a re-roll of it repeats it) and guides --creative's pass.
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidPrompt(
            f"That prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}."
        )
    check_prompt_text(prompt)
    if opts.negative and (model is None or not model.supports_negative):
        raise InvalidOption("--no needs --creative with a model that uses it.", option="no")
    seed = opts.seed if opts.seed is not None else seed % (MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise _range_error("seed", seed, 0, MAX_SEED, upscaler.name)

    width, height = _upscaled_size(image_size, scale, max_side)
    cost = upscaler.estimate_cost(width=width, height=height)
    steps, guidance, strength = 1, 0.0, None
    if model is not None:
        steps, guidance = model.steps_default, model.guidance_default
        strength = upscaler.creative_strength
        # img2img runs about strength × steps of the model's steps, over the output's pixels.
        refine = model.estimate_cost(width=width, height=height, steps=steps)
        cost = round(cost + refine * strength, 2)
    return GenerationParams(
        task=Task.UPSCALE,
        model=upscaler.name,
        prompt=prompt,
        negative_prompt=opts.negative or "",
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        seed=seed,
        strength=strength,
        cost=cost,
        upscale_model=model.name if model is not None else None,
    )


def _upscaled_size(
    image_size: tuple[int, int] | None, scale: int, max_side: int
) -> tuple[int, int]:
    """The image's size × ``scale``, scaled down (the ratio kept) to a long side of ``max_side``."""
    if image_size is None:
        return 0, 0
    width, height = image_size
    if max(width, height) >= max_side:
        raise InvalidOption(
            f"The image is already {width}x{height}; /upscale makes images up to {max_side} "
            f"pixels on the long side.",
            option="scale",
        )
    fit = min(1.0, max_side / (max(width, height) * scale))
    return max(1, round(width * scale * fit)), max(1, round(height * scale * fit))
