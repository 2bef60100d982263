"""Switching models under a budget that fits one: the old one goes before the new one loads.

Host memory is read from the kernel: ``/proc/self/status`` VmHWM (the peak resident set) after
resetting it with ``echo 5 > /proc/self/clear_refs`` (proc(5)), so no peak between two samples
is missed. The tiny set's models are a few MB, as small as the noise of a Python process, so the
switch uses a Z-Image built from the tiny builder with a wider denoiser (~90 MB in float32),
saved in bfloat16 as the hub ships weights: loading it casts to float32 on the CPU, so every
byte of it is resident memory, not pages of its file left unread.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

from reelbot.catalog import Catalog, Task
from reelbot.generation import footprint, tiny
from reelbot.generation.gpu import GpuOptions
from reelbot.generation.runner import Runner
from reelbot.jobs import resolve

PROC = Path("/proc/self")


def _status_kib(field: str) -> int:
    for line in (PROC / "status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _reset_peak() -> None:
    (PROC / "clear_refs").write_text("5")


def _can_measure() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        _reset_peak()
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


needs_proc = pytest.mark.skipif(not _can_measure(), reason="needs Linux /proc peak RSS reset")


@pytest.fixture(scope="module")
def wide_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Z-Image pipeline from ``tiny``'s builder whose denoiser is 512 wide, saved in bf16."""
    folder = tmp_path_factory.mktemp("wide") / "zimage"
    with torch.random.fork_rng(devices=[]):
        pipe = tiny.BUILDERS["zimage"]()
        small = pipe.transformer
        # Head size stays 16 (= sum of axes_dims), so the rope layout is the tiny one's.
        config = {**small.config, "dim": 512, "n_heads": 32, "n_kv_heads": 32, "n_layers": 4}
        torch.manual_seed(0)
        wide = type(small).from_config(config)
        with torch.no_grad():
            wide.x_pad_token.fill_(1.0)
            wide.cap_pad_token.fill_(1.0)
        pipe.register_modules(transformer=wide)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.to(torch.bfloat16)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wide_catalog(tiny_catalog: Catalog, wide_folder: Path) -> Catalog:
    """Two models, ``wide-a`` and ``wide-b``, each loading its own copy of the wide folder."""
    base = tiny_catalog.models["tiny-zimage"]
    models = {
        name: base.model_copy(update={"name": name, "source": str(wide_folder)})
        for name in ("wide-a", "wide-b")
    }
    return tiny_catalog.model_copy(update={"models": models, "defaults": {}})


def test_the_size_from_the_files_is_the_loaded_size(
    tiny_catalog: Catalog, tiny_data_dir: Path, wide_catalog: Catalog
) -> None:
    for catalog, name in [(tiny_catalog, "tiny-zimage"), (wide_catalog, "wide-a")]:
        spec = catalog.get(name)
        expected = footprint.weight_bytes(spec, data_dir=tiny_data_dir, dtype=torch.float32)
        runner = Runner(catalog, data_dir=tiny_data_dir, device="cpu")
        runner.preload(name)
        model = runner.loaded(name)
        assert model is not None and expected is not None
        # Files hold the persistent tensors; a few non-persistent buffers exist only loaded.
        assert abs(expected - model.nbytes) <= 0.01 * model.nbytes
        runner.unload()
    # bf16 on an accelerator: half the float32 count; a hub model not downloaded: unknown.
    spec = wide_catalog.get("wide-a")
    half = footprint.weight_bytes(spec, data_dir=tiny_data_dir, dtype=torch.bfloat16)
    full = footprint.weight_bytes(spec, data_dir=tiny_data_dir, dtype=torch.float32)
    assert half is not None and full is not None and half * 2 == full
    hub = spec.model_copy(update={"source": "nobody/not-downloaded"})
    assert footprint.weight_bytes(hub, data_dir=tiny_data_dir, dtype=torch.float32) is None


@needs_proc
def test_a_switch_evicts_before_loading_and_never_holds_both(
    wide_catalog: Catalog, tiny_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One generation and drop first: imports and allocator arenas are not the switch's cost.
    params = resolve(Task.IMAGINE, "a fox --model wide-a --steps 1", wide_catalog)
    sizer = Runner(wide_catalog, data_dir=tiny_data_dir, device="cpu")
    sizer.generate(params)
    model = sizer.loaded("wide-a")
    assert model is not None
    size = model.nbytes
    sizer.unload()
    del model, sizer
    baseline = _status_kib("VmRSS")

    runner = Runner(
        wide_catalog, data_dir=tiny_data_dir, device="cpu", memory_budget_bytes=size * 3 // 2
    )
    runner.generate(params)  # A in use, with its step previewer
    before = _status_kib("VmRSS")
    _reset_peak()
    with caplog.at_level(logging.INFO, logger="reelbot.generation.runner"):
        runner.preload("wide-b")
    peak = _status_kib("VmHWM")

    assert runner.resident == ["wide-b"]
    messages = [r.getMessage() for r in caplog.records]
    evicted = next(i for i, m in enumerate(messages) if m.startswith("evicting wide-a"))
    loading = next(i for i, m in enumerate(messages) if m.startswith("loading wide-b"))
    assert evicted < loading, messages
    mib = 2**20
    print(
        f"\nmodel {size / mib:.0f} MiB; RSS baseline {baseline / mib:.0f} MiB, with A "
        f"{before / mib:.0f} MiB, peak during the switch {peak / mib:.0f} MiB: "
        f"+{(peak - before) / mib:.0f} MiB over A resident, "
        f"{(peak - baseline) / size:.2f}x the model over the baseline"
    )
    # Loading first held A and B at once: the switch added a whole model (and then some).
    assert peak - before < size
    assert peak - baseline < 2 * size


def test_offloaded_models_get_a_share_of_the_host_memory() -> None:
    assert GpuOptions(offload_host_bytes=123).offload_host_budget() == 123
    budget = GpuOptions().offload_host_budget()
    if sys.platform.startswith("linux"):
        total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024  # MemTotal, kB
        cgroup = Path("/sys/fs/cgroup/memory.max")
        limit = cgroup.read_text().strip() if cgroup.is_file() else "max"
        total = min(total, int(limit)) if limit.isdigit() else total
        assert budget is not None and 0.7 * total < budget < 0.9 * total


def test_a_hub_model_is_sized_from_the_snapshot_its_ref_names(
    tiny_catalog: Catalog, tiny_data_dir: Path, tmp_path: Path
) -> None:
    spec = tiny_catalog.get("tiny-zimage")
    built = tiny.ensure_built(spec.family, tiny_data_dir)
    hub = spec.model_copy(update={"source": "someone/zimage"})
    repo = tmp_path / "hub" / "models--someone--zimage"
    # An older snapshot with no weights beside the one refs/main points at (huggingface_hub's
    # cache layout); only the referenced one counts.
    (repo / "snapshots" / "old" / "transformer").mkdir(parents=True)
    shutil.copytree(built, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    local = footprint.weight_bytes(spec, data_dir=tiny_data_dir, dtype=torch.float32)
    cached = footprint.weight_bytes(hub, data_dir=tmp_path, dtype=torch.float32)
    assert local is not None and cached == local
