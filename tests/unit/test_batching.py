"""Batching image jobs into one pipeline call, and the CPU-checkable accelerator options."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from reelbot.catalog import BUILTIN_SETS, Catalog, Task, load_catalog
from reelbot.config import Settings
from reelbot.errors import Cancelled, ConfigError, MissingImage, UnknownModel
from reelbot.generation import runner as runner_module
from reelbot.generation.batching import batch_key, plan_batches
from reelbot.generation.gpu import GpuOptions
from reelbot.generation.runner import GenerationOutput, Progress, Runner
from reelbot.jobs import GenerationParams, resolve

PROMPTS = [("a red fox", 1), ("a blue whale swimming in the deep ocean at night", 7), ("ok", 3)]


def _params(
    catalog: Catalog,
    model: str = "tiny-zimage",
    flags: str = "",
    prompt: str = "a red fox",
    seed: int = 1,
    task: Task = Task.IMAGINE,
) -> GenerationParams:
    text = f"{prompt} --model {model} --seed {seed} {flags}".strip()
    return resolve(task, text, catalog, has_image=task.needs_image)


def _pixels(out: GenerationOutput | BaseException) -> np.ndarray:
    assert isinstance(out, GenerationOutput), out
    return np.stack([np.asarray(f) for f in out.frames]).astype(np.int16)


def _assert_same_image(batched: np.ndarray, alone: np.ndarray) -> None:
    # Float32 on the CPU: latents agree to ~1e-6 (a batched matmul sums in another order
    # than a one-row one); after the VAE, a value on a rounding edge can move one level.
    diff = np.abs(batched - alone)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


# -- the runner ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "flags"),
    [
        ("tiny-zimage", "--steps 3"),
        # With guidance above 1 Z-Image runs classifier-free guidance on the negatives too.
        ("tiny-zimage", "--steps 3 --guidance 4 --no blurry"),
        ("tiny-flux2", "--steps 3"),
    ],
    ids=["zimage", "zimage-cfg-negative", "flux2"],
)
def test_a_batch_equals_one_by_one_runs(
    runner: Runner, tiny_catalog: Catalog, model: str, flags: str
) -> None:
    group = [_params(tiny_catalog, model, flags, p, s) for p, s in PROMPTS]
    assert len({batch_key(p) for p in group}) == 1
    alone = [_pixels(runner.generate(p)) for p in group]
    batched = runner.generate_batch([(p, None) for p in group])
    assert len(batched) == 3
    for out, params, expected in zip(batched, group, alone, strict=True):
        assert isinstance(out, GenerationOutput)
        assert out.seed == params.seed
        assert out.frames[0].size == (params.width, params.height)
        assert out.timings["batch"] == 3
        _assert_same_image(_pixels(out), expected)
    # The items are really different images (per-item seeds and prompts reached the pipeline).
    assert not np.array_equal(alone[0], alone[1])
    assert not np.array_equal(alone[1], alone[2])


def test_cancelling_one_item_drops_it_and_the_others_finish(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    group = [_params(tiny_catalog, "tiny-zimage", "--steps 4", p, s) for p, s in PROMPTS]
    alone = [_pixels(runner.generate(p)) for p in group]
    cancels = [threading.Event() for _ in group]
    events: list[list[Progress]] = [[], [], []]

    def recorder(k: int) -> Any:
        def on_progress(event: Progress) -> None:
            events[k].append(event)
            if k == 1 and event.stage == "denoising" and event.step == 2:
                cancels[1].set()

        return on_progress

    results = runner.generate_batch(
        [(p, None) for p in group],
        on_progress=[recorder(k) for k in range(3)],
        cancel_events=cancels,
    )
    assert isinstance(results[1], Cancelled)
    _assert_same_image(_pixels(results[0]), alone[0])
    _assert_same_image(_pixels(results[2]), alone[2])
    # The cancelled item hears nothing after the step it was cancelled in.
    assert [(e.stage, e.step) for e in events[1]] == [("denoising", 1), ("denoising", 2)]
    for k in (0, 2):
        assert [e.step for e in events[k] if e.stage == "denoising"] == [1, 2, 3, 4]
        assert events[k][-1].stage == "decoding"


def test_cancelling_every_item_stops_the_call(runner: Runner, tiny_catalog: Catalog) -> None:
    group = [_params(tiny_catalog, "tiny-zimage", "--steps 6", p, s) for p, s in PROMPTS[:2]]
    cancels = [threading.Event(), threading.Event()]
    steps: list[int] = []

    def on_progress(event: Progress) -> None:
        steps.append(event.step)
        if event.step == 2:
            for cancel in cancels:
                cancel.set()

    results = runner.generate_batch(
        [(p, None) for p in group], on_progress=[on_progress, None], cancel_events=cancels
    )
    assert all(isinstance(r, Cancelled) for r in results)
    assert max(steps) == 2  # stopped at the end of the step, not after six


def test_an_item_cancelled_before_the_call_never_runs(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    group = [_params(tiny_catalog, "tiny-zimage", "", p, s) for p, s in PROMPTS[:2]]
    early = threading.Event()
    early.set()
    heard: list[Progress] = []
    results = runner.generate_batch(
        [(p, None) for p in group], on_progress=[heard.append, None], cancel_events=[early, None]
    )
    assert isinstance(results[0], Cancelled)
    assert heard == []
    assert isinstance(results[1], GenerationOutput)
    assert results[1].timings["batch"] == 1  # the cancelled job was not computed alongside


def test_mixed_items_run_apart_and_errors_stay_in_place(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    image = _params(tiny_catalog, "tiny-zimage", "--steps 2", "a fox", 1)
    wide = _params(tiny_catalog, "tiny-zimage", "--steps 2 --ar 2:1", "a fox", 2)
    video = _params(tiny_catalog, "tiny-wan", "", "a fox", 3, Task.VIDEO)
    remix = _params(tiny_catalog, "tiny-zimage", "--steps 4", "a fox", 4, Task.REMIX)
    unknown = image.model_copy(update={"model": "no-such-model"})
    results = runner.generate_batch(
        [(image, None), (wide, None), (video, None), (remix, None), (unknown, None)]
    )
    assert isinstance(results[3], MissingImage)
    assert isinstance(results[4], UnknownModel)
    for out, params in zip(results[:3], (image, wide, video), strict=True):
        assert isinstance(out, GenerationOutput)
        assert out.timings["batch"] == 1
        assert len(out.frames) == params.frames
        assert out.frames[0].size == (params.width, params.height)
        np.testing.assert_array_equal(_pixels(out), _pixels(runner.generate(params)))


def test_per_item_sequences_must_match_the_items(runner: Runner, tiny_catalog: Catalog) -> None:
    params = _params(tiny_catalog)
    with pytest.raises(ValueError, match="one entry per item"):
        runner.generate_batch([(params, None)], cancel_events=[None, None])


# -- planning (no torch) -------------------------------------------------------------------


def test_plan_groups_compatible_jobs_in_queue_order(tiny_catalog: Catalog) -> None:
    a = [_params(tiny_catalog, "tiny-zimage", "", f"fox {n}", n) for n in range(5)]
    b = _params(tiny_catalog, "tiny-flux2")
    video = _params(tiny_catalog, "tiny-wan", task=Task.VIDEO)
    jobs = [a[0], b, a[1], video, a[2], a[3], a[4]]
    assert plan_batches(jobs, 2) == [[0, 2], [1], [3], [4, 5], [6]]
    assert plan_batches(jobs, 8) == [[0, 2, 4, 5, 6], [1], [3]]
    assert plan_batches(jobs, 1) == [[i] for i in range(7)]
    assert plan_batches([], 4) == []
    with pytest.raises(ValueError):
        plan_batches(jobs, 0)


@pytest.mark.parametrize(
    "flags",
    [
        "--model",
        "--ar 2:1",
        "--steps 3",
        "--guidance 4",
        "--no blurry",
    ],
)
def test_incompatible_jobs_never_share_a_call(tiny_catalog: Catalog, flags: str) -> None:
    base = _params(tiny_catalog, "tiny-flux2" if flags == "--model" else "tiny-zimage")
    other = _params(tiny_catalog, "tiny-zimage", "" if flags == "--model" else flags, seed=2)
    assert batch_key(base) != batch_key(other)
    assert plan_batches([base, other], 8) == [[0], [1]]


def test_only_text_to_image_batches(tiny_catalog: Catalog) -> None:
    assert batch_key(_params(tiny_catalog)) is not None
    for task, model in [(Task.REMIX, "tiny-zimage"), (Task.VIDEO, "tiny-wan")]:
        params = _params(tiny_catalog, model, task=task)
        assert batch_key(params) is None
        assert plan_batches([params, params], 8) == [[0], [1]]
    # Seed, prompt and negative text are per item: they do not split a batch.
    one = _params(tiny_catalog, flags="--no blur", prompt="x", seed=1)
    two = _params(tiny_catalog, flags="--no fog", prompt="y", seed=2)
    assert batch_key(one) == batch_key(two)


_JOB = st.builds(
    GenerationParams,
    task=st.sampled_from([Task.IMAGINE, Task.REMIX, Task.VIDEO]),
    model=st.sampled_from(["a", "b"]),
    prompt=st.just("p"),
    negative_prompt=st.sampled_from(["", "n"]),
    width=st.sampled_from([64, 128]),
    height=st.just(64),
    steps=st.sampled_from([2, 4]),
    guidance=st.just(1.0),
    seed=st.integers(0, 9),
)


@settings(max_examples=200, deadline=None)
@given(jobs=st.lists(_JOB, max_size=20), max_size=st.integers(1, 5))
def test_plans_cover_every_job_once_with_one_key_per_batch(
    jobs: list[GenerationParams], max_size: int
) -> None:
    batches = plan_batches(jobs, max_size)
    assert sorted(i for batch in batches for i in batch) == list(range(len(jobs)))
    for batch in batches:
        assert 1 <= len(batch) <= max_size
        assert batch == sorted(batch)
        keys = {batch_key(jobs[i]) for i in batch}
        assert len(keys) == 1
        if len(batch) > 1:
            assert None not in keys
    firsts = [batch[0] for batch in batches]
    assert firsts == sorted(firsts)


def test_the_planner_imports_no_torch() -> None:
    code = "import sys, reelbot.generation.batching; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- accelerator options that the CPU can check --------------------------------------------


def test_options_default_to_compiling_on_cuda_only() -> None:
    auto = GpuOptions()
    assert not auto.compiles_on("cpu")
    assert auto.compiles_on("cuda") and auto.compiles_on("cuda:1")
    assert not GpuOptions(compile=False).compiles_on("cuda")
    assert GpuOptions(compile=True).compiles_on("cpu")


def test_vae_tiling_follows_the_card_and_the_video_size() -> None:
    auto = GpuOptions()
    wan_720p = 1280 * 704 * 81
    assert not auto.tiles("cpu", None, wan_720p)
    assert auto.tiles("cuda", 24 * 2**30, wan_720p)
    assert not auto.tiles("cuda", 80 * 2**30, wan_720p)
    assert auto.tiles("cuda", 80 * 2**30, 1920 * 1088 * 121)
    assert not auto.tiles("cuda", 24 * 2**30, 704 * 480 * 121)  # LTX default: 8.8 GB peak
    assert GpuOptions(vae_tiling=True).tiles("cpu", None, 1)


def test_options_come_from_the_settings() -> None:
    options = GpuOptions.from_settings(
        Settings(compile=False, attention_backend="_native_cudnn", vae_tiling=True, offload=False)
    )
    assert options == GpuOptions(
        compile=False, attention_backend="_native_cudnn", vae_tiling=True, offload=False
    )
    assert Settings().batch_max == 1


@pytest.mark.parametrize("name", ["fastest", "flash_hub"])
def test_a_bad_attention_backend_stops_start_up(
    tiny_catalog: Catalog, tiny_data_dir: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match="REELBOT_ATTENTION_BACKEND"):
        Runner(
            tiny_catalog,
            data_dir=tiny_data_dir,
            device="cpu",
            gpu=GpuOptions(attention_backend=name),
        )


def test_an_unavailable_attention_backend_falls_back_to_sdpa(
    runner: Runner, tiny_catalog: Catalog, tiny_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = _params(tiny_catalog)
    expected = _pixels(runner.generate(params))
    # FlashAttention 3 is a known name, but its package is not installed here.
    flash = Runner(
        tiny_catalog,
        data_dir=tiny_data_dir,
        device="cpu",
        gpu=GpuOptions(attention_backend="_flash_3"),
    )
    with caplog.at_level(logging.WARNING, logger="reelbot.generation.gpu"):
        out = flash.generate(params)
    assert "keeping SDPA" in caplog.text
    np.testing.assert_array_equal(_pixels(out), expected)


def test_compiling_warms_every_task_up_at_preload(
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Inductor on the CPU takes half a minute even for a tiny model: record the call instead
    # (tests/gpu compiles for real).
    compiled: list[Any] = []
    monkeypatch.setattr(runner_module, "compile_denoiser", compiled.append)
    warm = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu", gpu=GpuOptions(compile=True))
    with caplog.at_level(logging.INFO, logger="reelbot.generation.runner"):
        warm.preload("tiny-zimage")
    assert len(compiled) == 1  # imagine and remix share one denoiser
    assert caplog.text.count("warmed up") == 2
    with caplog.at_level(logging.INFO, logger="reelbot.generation.runner"):
        warm.preload("tiny-zimage")
    assert caplog.text.count("warmed up") == 2  # once per loaded model and task
    off = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu")
    off.preload("tiny-zimage")
    assert len(compiled) == 1  # auto: never on the CPU


def test_video_decodes_tile_when_asked(tiny_catalog: Catalog, tiny_data_dir: Path) -> None:
    tiled = Runner(
        tiny_catalog, data_dir=tiny_data_dir, device="cpu", gpu=GpuOptions(vae_tiling=True)
    )
    params = _params(tiny_catalog, "tiny-wan", task=Task.VIDEO)
    out = tiled.generate(params)
    loaded = tiled.loaded("tiny-wan")
    assert loaded is not None
    assert loaded.pipeline(Task.VIDEO).vae.use_tiling is True
    assert len(out.frames) == params.frames
    assert out.frames[0].size == (params.width, params.height)


def test_an_image_list_never_reaches_an_image_task(runner: Runner, tiny_catalog: Catalog) -> None:
    # Remix does not batch (FLUX.2 would read a list as references for one prompt); a direct
    # call with two remix jobs runs them one by one.
    remix = [
        _params(tiny_catalog, "tiny-zimage", "--steps 4", "a fox", s, Task.REMIX) for s in (1, 2)
    ]
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    results = runner.generate_batch([(p, image) for p in remix])
    assert [r.timings["batch"] for r in results if isinstance(r, GenerationOutput)] == [1, 1]


def test_the_card_sized_model_sets_load() -> None:
    # The accelerator options above assume these sizes; the 80 GB set only grows the videos.
    assert {"default", "default-80gb"} <= set(BUILTIN_SETS)
    small, large = load_catalog("default"), load_catalog("default-80gb")
    assert small.models.keys() == large.models.keys()
    assert small.defaults == large.defaults
    wan = large.get("wan2.2-5b")
    assert (wan.width, wan.height, wan.frames_default) == (1280, 704, 121)
    for name in ("z-image-turbo", "flux2-klein"):
        assert small.get(name) == large.get(name)
