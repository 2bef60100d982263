"""The platform registry is what the rest reads: folders, contracts and budgets agree with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from reelbot.jobs import ReplyAddress
from reelbot.platforms import FALLBACK_BUDGET, PLATFORMS
from reelbot.queue.budgets import budget_for

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "reelbot"


def test_every_platform_has_its_folder_and_hooks() -> None:
    for name, platform in PLATFORMS.items():
        assert (SRC / "bots" / name / "__init__.py").exists(), name
        for target in (platform.command, platform.up):
            module, _, attr = target.partition(":")
            assert module.startswith(f"reelbot.bots.{name}."), target
            path = SRC.parent / (module.replace(".", "/") + ".py")
            assert f"def {attr}(" in path.read_text(), target


def test_the_independence_contract_lists_exactly_the_registry() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    [independent] = [c for c in contracts if c["type"] == "independence"]
    assert set(independent["modules"]) == {f"reelbot.bots.{name}" for name in PLATFORMS}


def test_budgets_come_from_the_registry() -> None:
    for name, platform in PLATFORMS.items():
        reply = ReplyAddress(platform=name, channel_id="1")
        assert budget_for(reply, video=False) == platform.image_bytes
        assert budget_for(reply, video=True) == platform.video_bytes
    assert budget_for(ReplyAddress(platform="elsewhere", channel_id="1"), video=True) == (
        FALLBACK_BUDGET
    )


def test_no_platform_is_named_outside_its_folder() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        # The settings name each platform's section; help texts may show a scope as an example.
        if rel.parts[0] == "bots" or rel.name in ("platforms.py", "cli.py", "config.py"):
            continue
        text = path.read_text()
        for name in PLATFORMS:
            if f'"{name}"' in text:
                offenders.append(f"{rel}: {name}")
    assert offenders == []
