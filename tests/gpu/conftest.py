"""Opt-in CUDA tests: collected everywhere, skipped (with the reason) where CUDA is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests when torch sees no CUDA device (CI, laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="tests/gpu needs CUDA: torch.cuda.is_available() is False")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)
