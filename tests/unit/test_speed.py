"""Speed options in the model TOML: refused with one line when wrong, built and run on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelbot.catalog import Catalog, ModelSpec, Task, load_catalog
from reelbot.errors import ConfigError

torch = pytest.importorskip("torch")

from reelbot.generation import speed  # noqa: E402
from reelbot.generation.runner import Runner  # noqa: E402
from reelbot.jobs import GenerationParams  # noqa: E402

WAN_TOML = """
[models.w]
family = "wan22"
tasks = ["video"]
pipelines = {{ video = "WanPipeline" }}
source = "tiny"
steps_default = 2
steps_max = 8
guidance_default = 1.0
width = 32
height = 32
frames_default = 5
frames_max = 9
{extra}
"""


def _load(tmp_path: Path, extra: str) -> Catalog:
    path = tmp_path / "models.toml"
    path.write_text(WAN_TOML.format(extra=extra), "utf-8")
    return load_catalog(str(path))


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('quantize = "int4"', "quantize"),
        ('cache = "teacache"', "cache"),
        ('cache = "mag"', "cache_mag_ratios"),
        ('cache = "taylorseer"\ncache_threshold = 0.1', "cache_threshold is for"),
        ('cache = "first_block"\ncache_interval = 3', "cache_interval is for"),
        ('cache = "first_block"\ncache_threshold = 0', "cache_threshold"),
    ],
)
def test_a_wrong_speed_option_is_one_line_at_start(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, extra)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert message.startswith("REELBOT_MODELS:")


def _spec(base: ModelSpec, **update: Any) -> ModelSpec:
    return ModelSpec(**{**base.model_dump(), **update})


def test_start_up_refuses_a_cache_the_pipeline_cannot_take(tiny_catalog: Catalog) -> None:
    zimage = _spec(tiny_catalog.get("tiny-zimage"), cache="first_block")
    with pytest.raises(ConfigError, match=r"ZImageTransformer2DModel .* takes no diffusers cache"):
        speed.check_speed([zimage])
    flux = _spec(tiny_catalog.get("tiny-flux2"), cache="first_block")
    with pytest.raises(ConfigError, match=r"first-block cache fails on FLUX\.2"):
        speed.check_speed([flux])
    # The same check runs when a worker builds its runner.
    bad = tiny_catalog.model_copy(update={"models": {"tiny-zimage": zimage}})
    with pytest.raises(ConfigError, match="tiny-zimage"):
        Runner(bad, data_dir=Path("/nonexistent"), device="cpu")


SPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "fp8": {"quantize": "fp8"},
    "first_block": {"cache": "first_block", "cache_threshold": 0.05},
    "mag": {"cache": "mag", "cache_mag_ratios": (1.0, 0.99, 0.98)},
    "taylorseer": {"cache": "taylorseer", "cache_interval": 2},
    "fp8+first_block": {"quantize": "fp8", "cache": "first_block"},
}


@pytest.fixture(scope="module")
def speed_runner(tiny_catalog: Catalog, tiny_data_dir: Path) -> Runner:
    """A CPU runner serving tiny Wan once per speed variant."""
    base = tiny_catalog.get("tiny-wan")
    models = {f"wan-{k}": _spec(base, name=f"wan-{k}", **v) for k, v in SPEED_VARIANTS.items()}
    catalog = tiny_catalog.model_copy(update={"models": models, "defaults": {}})
    return Runner(catalog, data_dir=tiny_data_dir, device="cpu", preview_every=0)


def _video(runner: Runner, model: str, seed: int = 7) -> np.ndarray:
    params = GenerationParams(
        task=Task.VIDEO,
        model=model,
        prompt="a fox",
        width=32,
        height=32,
        steps=3,
        guidance=1.0,
        seed=seed,
        frames=5,
        fps=16,
    )
    out = runner.generate(params)
    assert len(out.frames) == 5 and out.frames[0].size == (32, 32)
    return np.stack([np.asarray(f) for f in out.frames])


@pytest.mark.parametrize("variant", list(SPEED_VARIANTS))
def test_every_speed_option_builds_and_runs_on_the_cpu(speed_runner: Runner, variant: str) -> None:
    model = f"wan-{variant}"
    first = _video(speed_runner, model)
    loaded = speed_runner.loaded(model)
    assert loaded is not None
    transformer = loaded.pipeline(Task.VIDEO).transformer
    options = SPEED_VARIANTS[variant]
    stored = {p.dtype for p in transformer.blocks.parameters()}
    if options.get("quantize") == "fp8":
        # On the CPU fp8 is layerwise casting: weights stored in float8, computed in float32.
        assert torch.float8_e4m3fn in stored
    else:
        assert stored == {torch.float32}
    assert transformer.is_cache_enabled == ("cache" in options)
    if "cache" in options:
        # The same seed gives the same video again: cache state does not leak between calls.
        assert np.array_equal(first, _video(speed_runner, model))


def test_fp8_without_torchao_on_an_fp8_gpu_falls_back_to_layerwise_casting(
    tiny_catalog: Catalog, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # torchao's float8 matmuls need CUDA (compute capability 8.9+): here only the fallback runs.
    from reelbot.generation import tiny
    from reelbot.generation.registry import pipeline_class

    monkeypatch.setattr(speed, "_has_fp8_cores", lambda device: True)
    monkeypatch.setattr(speed, "_torchao_float8", lambda: None)
    pipe = pipeline_class("WanPipeline").from_pretrained(
        str(tiny.ensure_built("wan22", tiny_data_dir)), dtype=torch.float32
    )
    with caplog.at_level("WARNING", logger="reelbot.generation.speed"):
        assert speed.quantize_fp8(pipe.transformer, "cuda", torch.float32) == "layerwise-fp8"
    assert "torchao is not installed" in caplog.text


def test_the_attention_probe_picks_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert speed.probe_attention("cpu") is None  # torch's SDPA
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    installed: set[str] = set()
    monkeypatch.setattr(speed, "_importable", lambda name: name in installed)
    assert speed.probe_attention("cuda") is None
    installed.add("sageattention")
    assert speed.probe_attention("cuda") == "sage"
    installed.add("flash_attn")
    assert speed.probe_attention("cuda") == "flash"
    installed.add("flash_attn_interface")
    assert speed.probe_attention("cuda") == "_flash_3"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert speed.probe_attention("cuda") == "flash"  # flash-attn 3 is Hopper only
    # LTX and Z-Image pass attention masks, which diffusers' flash and sage backends refuse.
    assert speed.probe_attention("cuda", "ltx") is None
    assert speed.probe_attention("cuda", "zimage") is None
    assert speed.probe_attention("cuda", "wan22") == "flash"


def test_a_forced_backend_wins_over_the_probe(speed_runner: Runner) -> None:
    loaded = speed_runner.loaded("wan-fp8")
    if loaded is None:
        _video(speed_runner, "wan-fp8")
        loaded = speed_runner.loaded("wan-fp8")
    assert loaded is not None
    pipe = loaded.pipeline(Task.VIDEO)
    # The spec without its options: only the attention choice is applied a second time.
    spec = speed_runner.catalog.get("wan-fp8").model_copy(update={"quantize": None})
    applied = speed.apply_speed(pipe, spec, device="cpu", attention="_native_math")
    assert applied.attention == "_native_math"
    assert speed.apply_speed(pipe, spec, device="cpu", attention=None).attention == "native"


def test_the_fast_set_serves_distilled_models_without_guidance() -> None:
    from reelbot.errors import InvalidOption
    from reelbot.jobs import resolve

    fast = load_catalog("fast")
    speed.check_speed(fast.models.values())
    video = fast.default_for(Task.VIDEO)
    assert video.steps_default <= 4 and video.guidance_max == 1.0
    assert video.component_dtypes == {"vae": "float32"}
    params = resolve(Task.VIDEO, "a fox running", fast)
    assert params.steps == video.steps_default and params.guidance == 1.0
    with pytest.raises(InvalidOption) as refused:
        resolve(Task.VIDEO, "a fox --guidance 5", fast)
    assert refused.value.option == "guidance"
    # Same weight per step as the 40-step model it was distilled from: a fast clip is cheaper.
    slow = load_catalog("default").default_for(Task.VIDEO)
    size = {"width": 1280, "height": 704, "frames": 81}
    fast_cost = video.estimate_cost(steps=video.steps_default, **size)
    assert fast_cost < slow.estimate_cost(steps=slow.steps_default, **size) / 5
    assert all(m.guidance_max <= 1.0 for m in fast.models.values())


def test_options_that_break_a_compiled_graph_keep_the_denoiser_eager(
    speed_runner: Runner, tiny_data_dir: Path, caplog: Any
) -> None:
    # compile_repeated_blocks(fullgraph=True) fails at the first call on the layerwise fp8 and
    # first-block hooks (Unsupported): the runner must not compile those, even when asked.
    from reelbot.generation.gpu import GpuOptions

    assert speed.Applied(quantize="layerwise-fp8").eager_because
    assert speed.Applied(cache="first_block").eager_because
    assert speed.Applied(cache="mag").eager_because
    assert speed.Applied(quantize="torchao-float8", cache="taylorseer").eager_because is None
    compiling = Runner(
        speed_runner.catalog,
        data_dir=tiny_data_dir,
        device="cpu",
        preview_every=0,
        gpu=GpuOptions(compile=True, warmup=False),
    )
    with caplog.at_level("WARNING", logger="reelbot.generation.runner"):
        _video(compiling, "wan-fp8+first_block")
    assert "wan-fp8+first_block runs eager: layerwise fp8" in caplog.text


def test_a_cancelled_cached_run_leaves_nothing_for_the_next(speed_runner: Runner) -> None:
    # A cancel raises out of the pipeline before diffusers resets its hooks; MagCache then
    # started the next job mid-schedule (a different video for the same seed).
    import threading

    from reelbot.errors import Cancelled

    first = _video(speed_runner, "wan-mag")
    stop = threading.Event()
    params = GenerationParams(
        task=Task.VIDEO,
        model="wan-mag",
        prompt="a fox",
        width=32,
        height=32,
        steps=3,
        guidance=1.0,
        seed=99,
        frames=5,
        fps=16,
    )
    with pytest.raises(Cancelled):
        speed_runner.generate(params, on_progress=lambda p: stop.set(), cancel=stop)
    assert np.array_equal(first, _video(speed_runner, "wan-mag"))
