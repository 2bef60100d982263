"""Model settings from the model cards, and a model that cannot load ends in one sentence."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import diffusers
import httpx2
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub.errors import GatedRepoError

from reelbot.catalog import Catalog, Task, load_catalog
from reelbot.cli import main
from reelbot.errors import InvalidOption, ModelUnavailable, OutOfMemory, error_from
from reelbot.generation import tiny
from reelbot.generation.registry import LoadedModel, load_model
from reelbot.generation.runner import Runner
from reelbot.jobs import Options, resolve


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path) -> None:
    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REELBOT_MODELS", "tiny")
    monkeypatch.setenv("REELBOT_DATA_DIR", str(tiny_data_dir))
    monkeypatch.setenv("REELBOT_DEVICE", "cpu")
    # Never reach the hub, wherever the tests run: a missing download stays missing.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The CLI's error: exit status 2 and one line, after the progress bar if one was drawn."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("reelbot: ")]
    assert len(lines) == 1, err
    assert err.endswith(lines[0])
    return lines[0]


# -- (3) settings from the model cards ---------------------------------------------------------


@pytest.mark.parametrize("catalog_name", ["default", "default-80gb"])
def test_z_image_turbo_refuses_guidance_and_negative(catalog_name: str) -> None:
    catalog = load_catalog(catalog_name)
    with pytest.raises(InvalidOption) as guidance:
        resolve(Task.IMAGINE, "a fox --guidance 2 --model z-image-turbo", catalog)
    assert guidance.value.option == "guidance"
    assert "--guidance 2" in guidance.value.user_message
    assert "z-image-turbo" in guidance.value.user_message
    with pytest.raises(InvalidOption) as negative:
        resolve(Task.IMAGINE, "a fox --no x --model z-image-turbo", catalog)
    assert negative.value.option == "no"
    assert "negative prompt (--no)" in negative.value.user_message
    # Guidance 0, what it was distilled for, is still accepted when asked for.
    params = resolve(Task.IMAGINE, "a fox --guidance 0 --model z-image-turbo", catalog)
    assert params.guidance == 0.0


def test_cli_refuses_guidance_before_any_download(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused option must not load or download a model")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", no_download)
    monkeypatch.setenv("REELBOT_MODELS", "default")
    prompt = "a fox --guidance 2 --model z-image-turbo"
    err = _one_line(capsys, ["generate", "imagine", prompt, "--out", str(tmp_path / "x.png")])
    assert "--guidance 2" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("catalog_name", ["default", "default-80gb"])
def test_wan_loads_its_vae_in_float32_with_its_negative_prompt(catalog_name: str) -> None:
    wan = load_catalog(catalog_name).get("wan2.2-5b")
    assert wan.dtype == "bfloat16"
    assert wan.component_dtypes == {"vae": "float32"}
    assert wan.supports_negative
    assert wan.negative_default.startswith("色调艳丽")


def test_a_component_dtype_overrides_the_model_dtype(
    tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    spec = tiny_catalog.get("tiny-wan").model_copy(update={"component_dtypes": {"vae": "float32"}})
    loaded = load_model(
        spec,
        data_dir=tiny_data_dir,
        dtype=torch.bfloat16,
        component_dtypes={"vae": torch.float32},
    )
    assert loaded.base.vae.dtype == torch.float32
    assert loaded.base.transformer.dtype == torch.bfloat16


def test_the_negative_default_fills_in_only_when_none_was_given(
    tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    spec = tiny_catalog.get("tiny-wan").model_copy(update={"negative_default": "static, blurry"})
    catalog = tiny_catalog.model_copy(update={"models": {**tiny_catalog.models, spec.name: spec}})
    runner = Runner(catalog, data_dir=tiny_data_dir, device="cpu")
    pipe = runner._load(spec)[0].pipeline(Task.VIDEO)
    plain = resolve(Task.VIDEO, "a fox --model tiny-wan", catalog)
    assert plain.negative_prompt == ""  # the job (and its Info) keeps what the user typed
    assert runner._call_kwargs(spec, pipe, [plain], None)["negative_prompt"] == "static, blurry"
    own = resolve(Task.VIDEO, "a fox --model tiny-wan --no rain", catalog)
    assert runner._call_kwargs(spec, pipe, [own], None)["negative_prompt"] == "rain"


# -- (5) a model that cannot load --------------------------------------------------------------


def _model_toml(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        "[models.fox]\n"
        'family = "zimage"\n'
        'tasks = ["imagine"]\n'
        'pipelines = { imagine = "ZImagePipeline" }\n'
        f'source = "{source}"\n'
        'dtype = "float32"\n'
        "steps_default = 2\nsteps_max = 4\nguidance_default = 0.0\n"
        "width = 64\nheight = 64\nmin_side = 32\nsize_multiple = 16\n",
        "utf-8",
    )
    return path


def _generate(tmp_path: Path) -> list[str]:
    return ["generate", "imagine", "a fox --model fox", "--out", str(tmp_path / "x.png")]


def test_a_model_not_downloaded_while_offline_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REELBOT_MODELS", str(_model_toml(tmp_path, "reelbot-tests/not-cached")))
    monkeypatch.setenv("REELBOT_DATA_DIR", str(tmp_path / "data"))
    err = _one_line(capsys, _generate(tmp_path))
    assert "reelbot-tests/not-cached" in err
    assert "not downloaded" in err
    assert "REELBOT_MODELS=tiny" in err


def test_a_damaged_download_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_data_dir: Path,
) -> None:
    folder = tmp_path / "fox"
    shutil.copytree(tiny.ensure_built("zimage", tiny_data_dir), folder)
    weights = next((folder / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # an interrupted download
    monkeypatch.setenv("REELBOT_MODELS", str(_model_toml(tmp_path, str(folder))))
    err = _one_line(capsys, _generate(tmp_path))
    assert "damaged files" in err
    assert str(folder) in err
    assert "REELBOT_MODELS=tiny" in err


def _raise_on_load(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    # A stand-in for the exception's source only: the mapping that follows is the real one.
    def failing(cls: Any, *args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(diffusers.ZImagePipeline, "from_pretrained", classmethod(failing))


def test_a_gated_model_names_hf_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/x"))
    gated = GatedRepoError("Access to model reelbot-tests/gated is restricted", response=response)
    try:
        raise OSError("Cannot load model reelbot-tests/gated") from gated
    except OSError as wrapped:
        _raise_on_load(monkeypatch, wrapped)
    monkeypatch.setenv("REELBOT_MODELS", str(_model_toml(tmp_path, "reelbot-tests/gated")))
    err = _one_line(capsys, _generate(tmp_path))
    assert "reelbot-tests/gated" in err
    assert "gated" in err
    assert "HF_TOKEN" in err


@pytest.mark.parametrize(
    "exc",
    [torch.OutOfMemoryError("CUDA out of memory"), MemoryError()],
    ids=["torch", "host"],
)
def test_out_of_memory_while_loading_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    exc: BaseException,
) -> None:
    _raise_on_load(monkeypatch, exc)
    monkeypatch.setenv("REELBOT_MODELS", str(_model_toml(tmp_path, "reelbot-tests/big")))
    err = _one_line(capsys, _generate(tmp_path))
    assert "not enough host memory to load model fox" in err
    assert "REELBOT_MODELS=tiny" in err


def test_out_of_memory_moving_to_the_device_is_the_same_sentence(
    monkeypatch: pytest.MonkeyPatch, tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    def full(self: LoadedModel, device: str) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LoadedModel, "to", full)
    runner = Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu")
    params = resolve(Task.IMAGINE, "a fox", tiny_catalog, explicit=Options())
    with pytest.raises(OutOfMemory, match="not enough host memory to load model tiny-zimage"):
        runner.generate(params)
    assert runner.resident == []


def test_the_chat_sees_the_failure_in_words_without_server_paths() -> None:
    error = ModelUnavailable(
        "Model fox (/srv/models/fox) has damaged files in /srv/models/fox: delete it.",
        model="fox",
        reason="broken",
    )
    assert "/srv" not in error.user_message
    assert "fox" in error.user_message
    assert "damaged" in error.user_message
    # As a stored outcome's error, it reads what the job stored.
    stored = error_from(ModelUnavailable.code, error.user_message)
    assert isinstance(stored, ModelUnavailable)
    assert stored.user_message == error.user_message
