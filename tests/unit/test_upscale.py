"""The upscaler: weights read by their published key names (checked against spandrel), tiles
whose seams match an untiled run, the output size rules of /upscale and its option errors."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
import torch
from PIL import Image

from reelbot.catalog import Task, load_catalog
from reelbot.errors import ConfigError, InvalidOption, MissingImage
from reelbot.generation import upscale
from reelbot.generation.batching import batch_key
from reelbot.generation.tiny import ensure_sr_built
from reelbot.inputs import upright_size
from reelbot.jobs import parse_prompt, resolve

CATALOG = load_catalog("tiny")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set's upscaler file, built as a worker builds it."""
    return ensure_sr_built(tmp_path_factory.mktemp("data"))


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def _diff(a: Image.Image, b: Image.Image) -> int:
    ta = torch.tensor(list(a.tobytes()), dtype=torch.int16)
    tb = torch.tensor(list(b.tobytes()), dtype=torch.int16)
    return int((ta - tb).abs().max())


# -- loading ----------------------------------------------------------------------------------


def test_tiny_weights_are_a_compact_x4_under_the_published_keys(weights: Path) -> None:
    state = upscale.read_state_dict(weights)
    assert "body.0.weight" in state and "body.1.weight" in state  # conv, PReLU
    assert upscale.detect_architecture(state) == "Compact"
    net = upscale.load_sr(weights, use_spandrel=False)
    assert (net.architecture, net.scale, net.loader) == ("Compact", 4, "reelbot")


def test_a_training_checkpoint_wrapped_in_params_ema_loads(weights: Path, tmp_path: Path) -> None:
    path = tmp_path / "net_g.pth"
    torch.save({"params_ema": upscale.read_state_dict(weights)}, path)
    net = upscale.load_sr(path, use_spandrel=False)
    assert net.scale == 4


def test_unknown_weights_are_a_config_error_naming_what_is_supported(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv_first.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="Compact"):
        upscale.load_sr(path, use_spandrel=False)


@pytest.fixture
def spandrel_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """spandrel imported with a stand-in for the only torchvision names it imports at module
    level (LaMa and RestoreFormer: transforms.functional's InterpolationMode, rotate,
    normalize); every module it brought is removed again afterwards."""
    pytest.importorskip("einops")
    functional = types.ModuleType("torchvision.transforms.functional")

    class InterpolationMode:
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def unused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Compact architecture never calls torchvision")

    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = unused  # type: ignore[attr-defined]
    functional.normalize = unused  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms  # type: ignore[attr-defined]
    _forget_spandrel()  # a failed import elsewhere may have left some of its modules
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", transforms)
    monkeypatch.setitem(sys.modules, "torchvision.transforms.functional", functional)
    upscale.spandrel_module.cache_clear()
    yield
    _forget_spandrel()  # imported against the stand-in: never reused by a later test


@pytest.mark.usefixtures("spandrel_importable")
def test_spandrel_reads_our_file_as_the_same_network(weights: Path) -> None:
    pytest.importorskip("spandrel")
    ours = upscale.load_sr(weights, use_spandrel=False)
    theirs = upscale.load_sr(weights)
    assert theirs.loader == "spandrel"
    assert (theirs.architecture, theirs.scale) == (ours.architecture, ours.scale)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = ours.module(x), theirs.module(x)
    assert a.shape == b.shape == (1, 3, 48, 40)
    torch.testing.assert_close(a, b)


def _forget_spandrel() -> None:
    for name in [n for n in sys.modules if n.startswith(("spandrel", "einops"))]:
        del sys.modules[name]
    upscale.spandrel_module.cache_clear()


def test_without_torchvision_spandrel_is_not_used(weights: Path) -> None:
    _forget_spandrel()
    if "torchvision" in sys.modules or upscale.spandrel_module() is not None:
        pytest.skip("this environment has a torchvision")
    assert upscale.load_sr(weights).loader == "reelbot"


# -- tiles ------------------------------------------------------------------------------------


def test_tiles_cover_the_image_and_end_at_its_edges() -> None:
    tiles = upscale.tiles_for(100, 40, 32, 8)
    assert {t.right for t in tiles} >= {100} and {t.bottom for t in tiles} >= {40}
    assert all(t.right - t.left == 32 and t.bottom - t.top == 32 for t in tiles)
    covered = torch.zeros(40, 100)
    for t in tiles:
        covered[t.top : t.bottom, t.left : t.right] = 1
    assert bool(covered.all())
    assert upscale.tiles_for(20, 10, 32, 8) == [upscale.Tile(0, 0, 20, 10)]


def test_tiled_output_matches_the_untiled_run_across_the_seams(weights: Path) -> None:
    net = upscale.load_sr(weights, use_spandrel=False)
    image = _noise(45, 31)
    steps: list[tuple[int, int]] = []
    tiled = upscale.run_sr(
        net, image, device="cpu", tile=16, overlap=8, on_tile=lambda d, n: steps.append((d, n))
    )
    whole = upscale.run_sr(net, image, device="cpu", tile=1024, overlap=0)
    assert tiled.size == whole.size == (180, 124)
    # Rounding to 8 bits may differ by one where the blend's sum is not exact.
    assert _diff(tiled, whole) <= 1
    assert len(steps) > 4 and steps[-1] == (len(steps), len(steps))


def test_a_cancel_stops_between_tiles(weights: Path) -> None:
    import threading

    from reelbot.errors import Cancelled

    net = upscale.load_sr(weights, use_spandrel=False)
    cancel = threading.Event()
    seen: list[int] = []

    def on_tile(done: int, total: int) -> None:
        seen.append(done)
        cancel.set()

    with pytest.raises(Cancelled):
        upscale.run_sr(
            net, _noise(40, 40), device="cpu", tile=16, overlap=8, on_tile=on_tile, cancel=cancel
        )
    assert seen == [1]


# -- /upscale's options -----------------------------------------------------------------------


def _resolve(text: str, size: tuple[int, int] | None = (64, 48), **kw: object) -> object:
    return resolve(Task.UPSCALE, text, CATALOG, has_image=True, image_size=size, **kw)  # type: ignore[arg-type]


def test_scale_multiplies_both_sides_and_costs_by_output_pixels() -> None:
    two = _resolve("")
    four = _resolve("--scale 4")
    assert (two.width, two.height) == (128, 96)  # type: ignore[attr-defined]
    assert (four.width, four.height) == (256, 192)  # type: ignore[attr-defined]
    assert four.model == "tiny-sr" and four.upscale_model is None  # type: ignore[attr-defined]
    spec = CATALOG.upscaler()
    assert four.cost == spec.estimate_cost(width=256, height=192)  # type: ignore[attr-defined]
    big = _resolve("--scale 4", size=(1024, 1024))
    assert big.cost > four.cost  # type: ignore[attr-defined]


def test_the_long_side_stops_at_the_cap_with_the_ratio_kept() -> None:
    params = _resolve("--scale 4", size=(3000, 1000), upscale_max_side=4096)
    assert (params.width, params.height) == (4096, 1365)  # type: ignore[attr-defined]
    with pytest.raises(InvalidOption, match="already 4096x100"):
        _resolve("", size=(4096, 100), upscale_max_side=4096)


def test_creative_adds_the_remix_models_pass_and_its_cost() -> None:
    plain = _resolve("--scale 2")
    creative = _resolve("a fox --scale 2 --creative")
    assert creative.upscale_model == "tiny-zimage"  # type: ignore[attr-defined]
    assert creative.prompt == "a fox"  # type: ignore[attr-defined]
    assert creative.strength == CATALOG.upscaler().creative_strength  # type: ignore[attr-defined]
    assert creative.cost > plain.cost  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("--scale 3", "--scale 2 or --scale 4"),
        ("--scale x", "whole number"),
        ("--ar 16:9", "--ar does not apply to /upscale"),
        ("--creative --model tiny-flux2", "no img2img pass"),
        ("--model tiny-zimage", "only applies with --creative"),
        ("--model nope --creative", "no model called 'nope'"),
    ],
)
def test_bad_upscale_options_say_what_to_use(text: str, words: str) -> None:
    from reelbot.errors import UserError

    with pytest.raises(UserError, match=words):
        _resolve(text)


def test_scale_and_creative_belong_to_upscale_only() -> None:
    with pytest.raises(InvalidOption, match="--scale only applies to /upscale"):
        resolve(Task.IMAGINE, "a fox --scale 2", CATALOG)
    with pytest.raises(InvalidOption, match="--creative only applies to /upscale"):
        resolve(Task.IMAGINE, "a fox --creative", CATALOG)


def test_creative_is_a_switch_that_takes_no_value() -> None:
    prompt, options = parse_prompt("--creative a red fox --scale 4")
    assert (prompt, options.creative, options.scale) == ("a red fox", True, 4)


def test_upscale_needs_an_image_and_never_batches() -> None:
    with pytest.raises(MissingImage):
        resolve(Task.UPSCALE, "", CATALOG)
    assert batch_key(_resolve("--scale 4")) is None  # type: ignore[arg-type]


def test_a_quarter_turn_in_exif_swaps_the_sides() -> None:
    buf = BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(buf, "JPEG", exif=exif)
    assert upright_size(buf.getvalue()) == (20, 40)


def test_an_unknown_default_upscaler_stops_the_catalog(tmp_path: Path) -> None:
    toml = (Path(__file__).parents[2] / "src/reelbot/data/models_tiny.toml").read_text()
    bad = tmp_path / "models.toml"
    bad.write_text(toml.replace('upscale = "tiny-sr"', 'upscale = "gone"'))
    with pytest.raises(ConfigError, match="default upscaler 'gone'"):
        load_catalog(str(bad))
