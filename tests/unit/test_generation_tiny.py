"""The offline tiny builds: deterministic, versioned, and loadable like a hub folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import diffusers
import pytest

from reelbot.generation import tiny
from reelbot.generation.registry import pipeline_class


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    # Every machine must build the same weights: same seed, same bytes on disk.
    tiny.build("wan22", tmp_path / "a")
    tiny.build("wan22", tmp_path / "b")
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert any(name.endswith(".safetensors") for name in first)
    assert first == second


def test_a_stale_build_is_replaced(tmp_path: Path) -> None:
    folder = tiny.ensure_built("ltx", tmp_path)
    assert folder == tmp_path / "tiny" / "ltx"
    marker = folder / tiny.MARKER
    stale = json.loads(marker.read_text("utf-8"))
    stale["build_version"] = tiny.BUILD_VERSION - 1
    marker.write_text(json.dumps(stale), "utf-8")
    (folder / "leftover.txt").write_text("from the old build", "utf-8")
    assert not tiny.is_built(folder, "ltx")

    assert tiny.ensure_built("ltx", tmp_path) == folder
    assert tiny.is_built(folder, "ltx")
    assert not (folder / "leftover.txt").exists()
    # Nothing half-written is left beside it.
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["ltx"]


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tiny builder"):
        tiny.ensure_built("sd15", tmp_path)
    assert not (tmp_path / "tiny" / "sd15").exists()


@pytest.mark.parametrize(
    ("family", "cls"),
    [
        ("zimage", "ZImagePipeline"),
        ("flux2_klein", "Flux2KleinPipeline"),
        ("wan22", "WanPipeline"),
        ("ltx", "LTXPipeline"),
    ],
)
def test_text_encoder_matches_its_tokenizer(tiny_data_dir: Path, family: str, cls: str) -> None:
    folder = tiny.ensure_built(family, tiny_data_dir)
    pipe = pipeline_class(cls).from_pretrained(folder)
    assert isinstance(pipe, diffusers.DiffusionPipeline)
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    assert not encoder.training, "dropout on: the same seed would not give the same image"
    assert len(tokenizer) <= encoder.config.vocab_size
    assert tokenizer.pad_token_id == encoder.config.pad_token_id
    assert tokenizer.eos_token_id == encoder.config.eos_token_id
    ids = tokenizer("一只狐狸 🦊 a fox")["input_ids"]
    assert max(ids) < encoder.config.vocab_size
    if family in ("zimage", "flux2_klein"):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "a fox"}], tokenize=False, add_generation_prompt=True
        )
        assert text == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n"
        # Specials are single tokens, not spelled out byte by byte.
        plain = "user\na fox" + "\n" + "assistant\n"
        assert len(tokenizer(text)["input_ids"]) == len(plain) + 3
