"""bench/gpu.py: the CPU dry run goes through every family, and the configs are full size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.py"

# Published sizes of the production checkpoints (parameters), held here rather than in the
# configs so a config typo cannot move its own goalposts.
TRANSFORMER_PARAMS = {
    "z-image-turbo": (5.8e9, 6.5e9),  # "6B" single-stream DiT
    "flux2-klein": (3.6e9, 4.2e9),  # FLUX.2 [klein] 4B
    "wan2.2-5b": (4.7e9, 5.3e9),  # Wan2.2 TI2V 5B
    "ltx-video": (1.8e9, 2.1e9),  # LTX-Video 2B
}
VAE_PARAMS = {
    "z-image-turbo": (7.0e7, 9.5e7),  # FLUX.1-style 16-channel AutoencoderKL, ~84M
    "flux2-klein": (8.0e7, 9.0e7),  # AutoencoderKLFlux2 checkpoint: 84,046,115
    "wan2.2-5b": (5.0e8, 8.0e8),  # Wan2.2 VAE (z_dim 48), ~0.7B
    "ltx-video": (3.0e8, 5.5e8),  # LTX-Video 0.9 video VAE, ~0.42B
}


def load_bench() -> ModuleType:
    """Import bench/gpu.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("reelbot_bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve annotations through sys.modules, so register before executing.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark module."""
    return load_bench()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `bench/gpu.py --dry-run` once in a subprocess and return its JSON."""
    out = tmp_path_factory.mktemp("gpu-bench")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "reelbot GPU bench" in proc.stdout  # the rich table was printed
    return dict(json.loads((out / "gpu.json").read_text()))


def rows_for(result: dict[str, Any], model: str, **match: Any) -> list[dict[str, Any]]:
    """Rows of one model matching the given fields."""
    return [
        r
        for r in result["rows"]
        if r["model"] == model and all(r[k] == v for k, v in match.items())
    ]


@pytest.mark.timeout(300)
def test_dry_run_measures_every_model(bench: ModuleType, dry_run: dict[str, Any]) -> None:
    names = [c["name"] for c in bench.load_configs()]
    assert sorted(dry_run["models"]) == sorted(names) == sorted(TRANSFORMER_PARAMS)
    assert dry_run["env"]["dry_run"] is True
    assert dry_run["env"]["torch"] and dry_run["env"]["diffusers"]
    for name in names:
        model = dry_run["models"][name]
        assert model["status"] == "ok", model
        assert model["flops_per_forward_b1"] > 0
        (row,) = rows_for(dry_run, name, mode="pipeline", setting="eager", batch=1)
        assert row["status"] == "ok", row
        for key in ("s_call", "s_item", "denoise_s", "step_s", "fwd_s", "vae_s", "tflops"):
            assert row[key] > 0, (name, key, row)
        assert row["n_fwd"] >= row["steps"]
    assert not [r for r in dry_run["rows"] if r["status"] != "ok"]


@pytest.mark.timeout(300)
def test_dry_run_covers_compile_batches_and_video_steps(dry_run: dict[str, Any]) -> None:
    # Compiled rows trace each family's blocks with fullgraph=True: a graph break fails them.
    for name in TRANSFORMER_PARAMS:
        (row,) = rows_for(dry_run, name, mode="pipeline", setting="compiled", batch=1)
        assert row["status"] == "ok" and row["s_item"] > 0, row
    assert rows_for(dry_run, "z-image-turbo", mode="pipeline", setting="eager", batch=2)
    (step,) = rows_for(dry_run, "wan2.2-5b", mode="step", setting="eager")
    assert step["fwd_s"] > 0 and step["est_default_s"] > 0 and step["vae_est_s"] > 0


@pytest.mark.parametrize("name", sorted(TRANSFORMER_PARAMS))
def test_full_size_configs_are_the_published_sizes(bench: ModuleType, name: str) -> None:
    import diffusers

    (cfg,) = [c for c in bench.load_configs() if c["name"] == name]
    assert hasattr(diffusers, cfg["pipeline"]), cfg["pipeline"]
    assert hasattr(diffusers, cfg["scheduler"]["class"])
    low, high = TRANSFORMER_PARAMS[name]
    n = bench.count_parameters(cfg["transformer"])  # meta device: no memory, no init
    assert low <= n <= high, f"{name} transformer has {n:,} parameters"
    low, high = VAE_PARAMS[name]
    n = bench.count_parameters(cfg["vae"])
    assert low <= n <= high, f"{name} VAE has {n:,} parameters"
    # The random prompt embeddings take their width from the transformer's own config.
    assert cfg["text"]["dim_from"] in cfg["transformer"]["config"]


def test_peak_table_knows_hopper() -> None:
    module = load_bench()
    assert module.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert module.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert module.peak_tflops_for("NVIDIA H200") == 989.0
    assert module.peak_tflops_for("Some Future GPU") is None


@pytest.mark.timeout(300)
def test_dry_run_builds_every_speed_row_with_its_drift(
    bench: ModuleType, dry_run: dict[str, Any]
) -> None:
    # Every config's speed options get a row; each batch-1 row but eager carries PSNR.
    for cfg in bench.load_configs():
        for setting in bench.SPEED_SETTINGS:
            if setting not in cfg.get("speed", {}):
                continue
            (row,) = rows_for(dry_run, cfg["name"], mode="pipeline", setting=setting, batch=1)
            assert row["status"] == "ok" and row["s_item"] > 0, row
            assert row["psnr_db"] is not None and 0 < row["psnr_db"] <= 100, row
    wan = {r["setting"]: r for r in dry_run["rows"] if r["model"] == "wan2.2-5b"}
    assert {"fp8", "cache", "distilled", "fast"} <= set(wan)
    assert wan["distilled"]["steps"] == 3 and wan["distilled"]["default_steps"] == 3
    assert "layerwise fp8" in wan["fp8"]["note"]  # no CUDA: the fallback path
    assert wan["cache"]["mfu"] is None  # skipped blocks would inflate it
    # Compiling the eager blocks changes nothing numerically on the dry run's eager backend.
    assert wan["compiled"]["psnr_db"] == 100
