"""The generation runner on the tiny models: real diffusers pipelines with random weights."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.errors import Cancelled, MissingImage, OutOfMemory, UnknownModel
from reelbot.generation.registry import load_model
from reelbot.generation.runner import Progress, Runner, fit_image
from reelbot.jobs import GenerationParams, resolve

CASES = [
    ("tiny-zimage", Task.IMAGINE),
    ("tiny-zimage", Task.REMIX),
    ("tiny-flux2", Task.IMAGINE),
    ("tiny-flux2", Task.REMIX),
    ("tiny-wan", Task.VIDEO),
    ("tiny-wan", Task.ANIMATE),
    ("tiny-ltx", Task.VIDEO),
    ("tiny-ltx", Task.ANIMATE),
]
CASE_IDS = [f"{model}-{task.value}" for model, task in CASES]


def _input_image(color: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    """A non-square input with structure, so cropping and content both matter."""
    image = Image.new("RGB", (120, 80), color)
    image.paste((20, 20, 220), (0, 0, 60, 40))
    return image


def _params(
    catalog: Catalog, model: str, task: Task, flags: str = "", prompt: str = "a red fox"
) -> GenerationParams:
    text = f"{prompt} --model {model} --seed 1 {flags}".strip()
    return resolve(task, text, catalog, has_image=task.needs_image)


def _pixels(frames: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(f) for f in frames])


@pytest.mark.parametrize(("model", "task"), CASES, ids=CASE_IDS)
def test_output_is_sized_and_reproducible(
    runner: Runner, tiny_catalog: Catalog, model: str, task: Task
) -> None:
    # A non-square aspect and a non-ASCII prompt: both go through the real tokenizers and VAEs.
    params = _params(tiny_catalog, model, task, "--ar 2:1", prompt="一只狐狸 🦊 in snow")
    image = _input_image() if task.needs_image else None
    out = runner.generate(params, image)
    expected_frames = params.frames if task.is_video else 1
    assert len(out.frames) == expected_frames
    for frame in out.frames:
        assert frame.mode == "RGB"
        assert frame.size == (params.width, params.height)
    first = _pixels(out.frames)
    assert first.std() > 0, "a uniform image means NaNs or a dead decoder"
    assert out.seed == params.seed
    assert out.fps == (params.fps if task.is_video else None)
    assert set(out.timings) == {"load", "denoise", "decode"}

    again = _pixels(runner.generate(params, image).frames)
    np.testing.assert_array_equal(first, again)  # same seed: pixel-exact
    other = _pixels(runner.generate(params.model_copy(update={"seed": 2}), image).frames)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("model", "task"), [("tiny-zimage", Task.IMAGINE), ("tiny-wan", Task.VIDEO)]
)
def test_progress_once_per_step_then_decoding(
    runner: Runner, tiny_catalog: Catalog, model: str, task: Task
) -> None:
    runner.preload(model)  # so no "loading" event
    params = _params(tiny_catalog, model, task, "--steps 4")
    events: list[Progress] = []
    runner.generate(params, on_progress=events.append)
    denoising = [e for e in events if e.stage == "denoising"]
    assert [(e.step, e.total) for e in denoising] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [e.stage for e in events][-1] == "decoding"
    assert [e.stage for e in events].count("decoding") == 1


def test_progress_reports_loading_when_the_model_is_not_resident(
    tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    fresh = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu")
    events: list[Progress] = []
    fresh.generate(_params(tiny_catalog, "tiny-ltx", Task.VIDEO), on_progress=events.append)
    assert events[0].stage == "loading"


def test_remix_reports_the_steps_it_runs(runner: Runner, tiny_catalog: Catalog) -> None:
    params = _params(tiny_catalog, "tiny-zimage", Task.REMIX, "--steps 8 --strength 0.5")
    events: list[Progress] = []
    runner.generate(params, _input_image(), on_progress=events.append)
    denoising = [e for e in events if e.stage == "denoising"]
    total = denoising[0].total
    assert 1 <= total < params.steps  # strength skips the early steps
    assert [e.step for e in denoising] == list(range(1, total + 1))


@pytest.mark.parametrize(
    ("model", "task"), [("tiny-zimage", Task.IMAGINE), ("tiny-wan", Task.VIDEO)]
)
def test_cancel_from_progress_stops_within_one_step(
    runner: Runner, tiny_catalog: Catalog, model: str, task: Task
) -> None:
    params = _params(tiny_catalog, model, task, "--steps 4")
    cancel = threading.Event()
    events: list[Progress] = []

    def on_progress(event: Progress) -> None:
        events.append(event)
        if event.stage == "denoising" and event.step == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        runner.generate(params, on_progress=on_progress, cancel=cancel)
    assert [e.stage for e in events if e.stage != "loading"] == ["denoising"]
    # The runner is usable afterwards, and the pipeline was not left interrupted.
    assert len(runner.generate(params).frames) == params.frames


def test_cancel_before_start_runs_nothing(runner: Runner, tiny_catalog: Catalog) -> None:
    cancel = threading.Event()
    cancel.set()
    events: list[Progress] = []
    with pytest.raises(Cancelled):
        runner.generate(
            _params(tiny_catalog, "tiny-zimage", Task.IMAGINE),
            on_progress=events.append,
            cancel=cancel,
        )
    assert events == []


def test_out_of_memory_becomes_a_transient_error(runner: Runner, tiny_catalog: Catalog) -> None:
    def on_progress(event: Progress) -> None:
        if event.stage == "denoising":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory) as caught:
        runner.generate(_params(tiny_catalog, "tiny-zimage", Task.IMAGINE), on_progress=on_progress)
    assert caught.value.code == "out_of_memory"


def test_missing_image_and_wrong_task_are_user_errors(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    params = _params(tiny_catalog, "tiny-zimage", Task.REMIX)
    with pytest.raises(MissingImage):
        runner.generate(params)
    with pytest.raises(UnknownModel):
        runner.generate(params.model_copy(update={"task": Task.VIDEO}))


@pytest.mark.parametrize(
    ("model", "task"), [("tiny-zimage", Task.REMIX), ("tiny-wan", Task.ANIMATE)]
)
def test_input_image_shapes_the_output(
    runner: Runner, tiny_catalog: Catalog, model: str, task: Task
) -> None:
    # At 2 steps and strength 0.6, Z-Image img2img starts from pure noise (its first timestep
    # is kept), so the image could not matter; at 4 steps it starts part-way.
    params = _params(tiny_catalog, model, task, "--steps 4")
    red = _pixels(runner.generate(params, _input_image((220, 20, 20))).frames)
    green = _pixels(runner.generate(params, _input_image((20, 220, 20))).frames)
    assert not np.array_equal(red, green)


def test_negative_prompt_and_strength_are_used(runner: Runner, tiny_catalog: Catalog) -> None:
    # Z-Image applies the negative prompt only with classifier-free guidance (guidance > 1).
    plain = _params(tiny_catalog, "tiny-zimage", Task.IMAGINE, "--guidance 4")
    negative = _params(tiny_catalog, "tiny-zimage", Task.IMAGINE, "--guidance 4 --no blurry")
    assert not np.array_equal(
        _pixels(runner.generate(plain).frames), _pixels(runner.generate(negative).frames)
    )
    weak = _params(tiny_catalog, "tiny-zimage", Task.REMIX, "--steps 4 --strength 0.3")
    strong = _params(tiny_catalog, "tiny-zimage", Task.REMIX, "--steps 4 --strength 0.9")
    image = _input_image()
    assert not np.array_equal(
        _pixels(runner.generate(weak, image).frames), _pixels(runner.generate(strong, image).frames)
    )


def test_ltx_frame_rate_reaches_the_pipeline(runner: Runner, tiny_catalog: Catalog) -> None:
    # LTX conditions its RoPE on the frame rate (registry FAMILIES["ltx"].fps_kwarg).
    slow = _params(tiny_catalog, "tiny-ltx", Task.VIDEO, "--fps 8")
    fast = _params(tiny_catalog, "tiny-ltx", Task.VIDEO, "--fps 24 --duration 0.375")
    assert slow.frames == fast.frames
    assert not np.array_equal(
        _pixels(runner.generate(slow).frames), _pixels(runner.generate(fast).frames)
    )


@pytest.mark.parametrize(
    ("model", "base", "derived"),
    [
        ("tiny-zimage", Task.IMAGINE, Task.REMIX),
        ("tiny-wan", Task.VIDEO, Task.ANIMATE),
        ("tiny-ltx", Task.VIDEO, Task.ANIMATE),
    ],
)
def test_image_tasks_share_the_loaded_weights(
    runner: Runner, model: str, base: Task, derived: Task
) -> None:
    runner.preload(model)
    loaded = runner.loaded(model)
    assert loaded is not None
    first, second = loaded.pipeline(base), loaded.pipeline(derived)
    assert type(first) is not type(second)
    assert second.transformer is first.transformer
    assert second.vae is first.vae
    assert second.text_encoder is first.text_encoder
    if model == "tiny-wan":
        # One Wan 2.2 TI2V folder serves both classes with timestep expansion on.
        assert second.config.expand_timesteps is True


def test_derived_pipelines_keep_the_loaded_dtypes(
    tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    # The runner computes in float32 on the CPU, so load in bf16 through the registry directly.
    loaded = load_model(tiny_catalog.get("tiny-wan"), data_dir=tiny_data_dir, dtype=torch.bfloat16)
    base = loaded.pipeline(Task.VIDEO)
    before = {name: p.dtype for name, p in base.transformer.named_parameters()}
    # Wan keeps its norms and time embedding in float32 even in a bf16 model.
    assert set(before.values()) == {torch.bfloat16, torch.float32}
    derived = loaded.pipeline(Task.ANIMATE)
    assert derived.transformer is base.transformer
    assert {name: p.dtype for name, p in base.transformer.named_parameters()} == before
    assert base.text_encoder.dtype == torch.bfloat16
    assert derived.config.expand_timesteps is True


def test_flux2_remix_is_the_same_pipeline(runner: Runner) -> None:
    runner.preload("tiny-flux2")
    loaded = runner.loaded("tiny-flux2")
    assert loaded is not None
    assert loaded.pipeline(Task.REMIX) is loaded.pipeline(Task.IMAGINE)


def test_lru_eviction_under_a_budget(tiny_catalog: Catalog, tiny_data_dir: Path) -> None:
    sizer = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu")
    names = ["tiny-zimage", "tiny-wan", "tiny-ltx"]
    sizes = {}
    for name in names:
        sizer.preload(name)
        loaded = sizer.loaded(name)
        assert loaded is not None
        sizes[name] = loaded.nbytes
    assert all(size > 0 for size in sizes.values())
    # Room for two models: A then B fill it; touching A leaves B least recently used; C, no
    # bigger than B, then evicts exactly B.
    largest, middle, smallest = sorted(names, key=lambda n: sizes[n], reverse=True)
    a, b, c = middle, largest, smallest
    lru = Runner(
        tiny_catalog, data_dir=tiny_data_dir, device="cpu", memory_budget_bytes=sizes[a] + sizes[b]
    )
    lru.preload(a)
    lru.preload(b)
    assert lru.resident == [a, b]
    lru.preload(a)
    assert lru.resident == [b, a]
    lru.preload(c)
    assert lru.resident == [a, c]
    # A budget smaller than any model keeps only the one in use.
    tight = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu", memory_budget_bytes=1)
    tight.preload("tiny-zimage")
    out = tight.generate(_params(tiny_catalog, "tiny-wan", Task.VIDEO))
    assert tight.resident == ["tiny-wan"]
    assert len(out.frames) == 9


def test_concurrent_calls_are_serialised(runner: Runner, tiny_catalog: Catalog) -> None:
    params = _params(tiny_catalog, "tiny-zimage", Task.IMAGINE, "--steps 4")
    expected = _pixels(runner.generate(params).frames)
    log: list[tuple[int, str]] = []
    results: dict[int, np.ndarray] = {}

    def job(n: int) -> None:
        out = runner.generate(params, on_progress=lambda e: log.append((n, e.stage)))
        results[n] = _pixels(out.frames)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1]
    for pixels in results.values():
        np.testing.assert_array_equal(pixels, expected)
    order = [n for n, _ in log]
    assert order == sorted(order) or order == sorted(order, reverse=True), "events interleaved"


def test_previews_come_every_few_steps(tiny_catalog: Catalog, tiny_data_dir: Path) -> None:
    previewing = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu", preview_every=2)
    events: list[Progress] = []
    previewing.generate(
        _params(tiny_catalog, "tiny-zimage", Task.IMAGINE, "--steps 5"), on_progress=events.append
    )
    with_preview = [e.step for e in events if e.preview is not None]
    assert with_preview == [2, 4]
    preview = next(e.preview for e in events if e.preview is not None)
    assert preview is not None and preview.mode == "RGB"
    assert np.asarray(preview).std() > 0


def test_fit_image_crops_to_the_aspect_then_resizes() -> None:
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 100))  # a blue left third: cropped away
    fitted = fit_image(image, 64, 64)
    assert fitted.size == (64, 64)
    colors = {c for _, c in fitted.getcolors(64 * 64) or []}
    assert (0, 0, 255) not in colors
    assert fit_image(Image.new("L", (64, 32)), 64, 32).mode == "RGB"
