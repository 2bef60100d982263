"""Fixtures shared by every test layer: the tiny model set and one runner for the session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reelbot.catalog import Catalog, load_catalog

if TYPE_CHECKING:
    from reelbot.generation.runner import Runner


@pytest.fixture(autouse=True)
def _no_leaked_log_handlers() -> Iterator[None]:
    """A test that starts a process's logging in-process (``setup_logging``: ``reelbot web``,
    ``reelbot worker``) leaves a handler on the stream pytest captured for it and then closed;
    every later log line would print a logging error. Such handlers go with their test."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    """The built-in ``tiny`` model set."""
    return load_catalog("tiny")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tiny models are built: ``REELBOT_TEST_DATA_DIR`` (reused across runs) or a tmp dir."""
    configured = os.environ.get("REELBOT_TEST_DATA_DIR")
    if configured:
        path = Path(configured).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("reelbot-data")


@pytest.fixture(scope="session")
def runner(tiny_catalog: Catalog, tiny_data_dir: Path) -> Runner:
    """One CPU runner on the tiny set, shared so each tiny model loads once per session."""
    # Imported here so that test modules which never ask for a runner do not import torch.
    from reelbot.generation.runner import Runner

    return Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu")
