"""On CUDA: an evicted model's GPU memory is freed without a copy to the host, and an offloaded
model counts only what it keeps on the GPU (nothing between calls) against the budget."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

from reelbot.catalog import Catalog, Task
from reelbot.generation.gpu import GpuOptions
from reelbot.generation.runner import Runner
from reelbot.jobs import resolve

pytestmark = pytest.mark.gpu

EAGER = GpuOptions(compile=False)


@pytest.fixture(scope="module")
def twins(tiny_catalog: Catalog) -> Catalog:
    """Two names for the tiny LTX model in bf16: two loads of the same size."""
    spec = tiny_catalog.models["tiny-ltx"].model_copy(update={"dtype": "bfloat16"})
    models = {name: spec.model_copy(update={"name": name}) for name in ("ltx-a", "ltx-b")}
    return tiny_catalog.model_copy(update={"models": models, "defaults": {}})


def test_a_switch_frees_the_gpu_and_copies_nothing_to_the_host(
    twins: Catalog, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.cuda.empty_cache()
    empty = torch.cuda.memory_allocated()
    sizer = Runner(twins, data_dir=tiny_data_dir, device="cuda", gpu=EAGER)
    sizer.preload("ltx-a")
    model = sizer.loaded("ltx-a")
    assert model is not None
    size = model.nbytes
    sizer.unload()
    del model
    assert torch.cuda.memory_allocated() - empty < size // 10  # unload freed the weights

    runner = Runner(
        twins, data_dir=tiny_data_dir, device="cuda", gpu=EAGER, memory_budget_bytes=size * 3 // 2
    )
    runner.preload("ltx-a")
    moves: list[str] = []
    real_to = diffusers.DiffusionPipeline.to

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        moves.append(str(args[0] if args else kwargs.get("device")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.DiffusionPipeline, "to", to)
    runner.preload("ltx-b")
    assert runner.resident == ["ltx-b"]
    assert all("cpu" not in move for move in moves), moves
    # Only B's weights are left on the GPU.
    assert torch.cuda.memory_allocated() - empty <= size + 2**20


def test_an_offloaded_model_counts_nothing_between_calls(
    twins: Catalog, tiny_data_dir: Path
) -> None:
    sizer = Runner(twins, data_dir=tiny_data_dir, device="cuda", gpu=EAGER)
    sizer.preload("ltx-a")
    model = sizer.loaded("ltx-a")
    assert model is not None
    largest, size = model.largest_module_bytes, model.nbytes
    sizer.unload()
    assert largest < size
    # Each model is over the budget (offloaded); its largest part fits, and so do both models.
    runner = Runner(
        twins, data_dir=tiny_data_dir, device="cuda", gpu=EAGER, memory_budget_bytes=largest
    )
    runner.preload("ltx-a")
    runner.preload("ltx-b")
    assert runner.resident == ["ltx-a", "ltx-b"]
    a = runner.loaded("ltx-a")
    assert a is not None and a.offloaded and a.resident_bytes == 0
    params = resolve(Task.VIDEO, "a fox --model ltx-a --steps 2", twins)
    out = runner.generate(params)
    assert len(out.frames) == params.frames
    assert runner.resident == ["ltx-b", "ltx-a"]
    assert a.resident_bytes == 0  # the hooks moved every part back after the call


def test_offloaded_models_share_the_host_memory_given_them(
    twins: Catalog, tiny_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sizer = Runner(twins, data_dir=tiny_data_dir, device="cuda", gpu=EAGER)
    sizer.preload("ltx-a")
    model = sizer.loaded("ltx-a")
    assert model is not None
    largest, size = model.largest_module_bytes, model.nbytes
    sizer.unload()
    # Room on the host for one offloaded model: B's load waits for A to go.
    gpu = GpuOptions(compile=False, offload_host_bytes=size * 3 // 2)
    runner = Runner(
        twins, data_dir=tiny_data_dir, device="cuda", gpu=gpu, memory_budget_bytes=largest
    )
    runner.preload("ltx-a")
    with caplog.at_level(logging.INFO, logger="reelbot.generation.runner"):
        runner.preload("ltx-b")
    assert runner.resident == ["ltx-b"]
    messages = [r.getMessage() for r in caplog.records]
    evicted = next(i for i, m in enumerate(messages) if m.startswith("evicting ltx-a"))
    loading = next(i for i, m in enumerate(messages) if m.startswith("loading ltx-b"))
    assert evicted < loading, messages
