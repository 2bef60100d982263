#!/usr/bin/env python
"""Benchmark the production model families at full size with random weights on one GPU.

Standalone on purpose (torch, diffusers, rich; no reelbot import) so it runs on a bare GPU box.
Each family's transformer and VAE are built from the config files in `bench/gpu_configs/`
(copies of the published `config.json` values; nothing is downloaded), text encoders are
skipped and random `prompt_embeds` of the real shape go into the real diffusers pipeline.

    python bench/gpu.py --out OUT_DIR                 # on a GPU, about 7 minutes on one H100
    python bench/gpu.py --dry-run --out OUT_DIR       # on CPU, tiny sizes, same code path (CI)

Rows: `pipeline` = one full pipeline call (denoise loop + VAE decode) per timed repeat;
`step` = one transformer forward at the production video size, timed alone, so a full-length
video can be extrapolated when the pipeline row had to use fewer frames or steps.
Work runs most-important first (eager batch 1, then compiled, then the speed options, then
larger batches) and a time budget skips what no longer fits; JSON is rewritten after every row.

Speed rows (each config's `speed` section, the options of reelbot.generation.speed): `fp8`
(torchao float8 on compute capability 8.9+ when torchao imports, else layerwise fp8 casting),
`cache` (a diffusers cache hook), `distilled` (the distilled preset's steps and guidance) and
`fast` (their combination, compiled). Each batch-1 pipeline row carries `psnr_db`: the decoded
frames against the eager row's, same embeddings and seed (100 = identical).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "gpu_configs"
SCHEMA_VERSION = 1

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) by GPU name fragment; the first match
# wins, so the more specific names come first. The H200 is the H100's chip with more memory.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
)

# Guesses used only to decide, before anything was measured, whether a task fits the budget.
GUESS_PREPARE_S = 20.0
GUESS_COMPILE_S = 60.0


class Captured(Exception):
    """Raised from a forward pre-hook to stop a pipeline once the denoiser inputs are seen."""


class Interrupted(BaseException):
    """Raised from the SIGTERM handler so the results so far are still written.

    A BaseException, so the per-setting `except Exception` handlers let it through.
    """


def log(message: str) -> None:
    """Print one progress line at once (the output may be a pipe read by a remote runner)."""
    print(message, flush=True)


def load_configs(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Read the model configs, in the order the benchmark runs them."""
    order = ["z-image-turbo", "flux2-klein", "wan2.2-5b", "ltx-video"]
    found = {p.stem: json.loads(p.read_text()) for p in sorted(CONFIG_DIR.glob("*.json"))}
    ranked = [n for n in order if n in found] + [n for n in found if n not in order]
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; known: {ranked}")
        ranked = [n for n in ranked if n in names]
    return [found[n] for n in ranked]


def component_config(spec: dict[str, Any], tiny: bool) -> dict[str, Any]:
    """The constructor config of one component, with the tiny overrides applied for dry runs."""
    config = dict(spec["config"])
    if tiny:
        config.update(spec.get("tiny", {}))
    return config


def count_parameters(spec: dict[str, Any], tiny: bool = False) -> int:
    """Parameters of a component, counted on the meta device (no memory, no init)."""
    import diffusers
    import torch

    cls = getattr(diffusers, spec["class"])
    with torch.device("meta"):
        model = cls.from_config(component_config(spec, tiny))
    return sum(p.numel() for p in model.parameters())


def peak_tflops_for(name: str) -> float | None:
    """The bf16 dense peak of a GPU by name, or None when it is not in the table."""
    for fragment, peak in PEAK_BF16_TFLOPS:
        if fragment.lower() in name.lower():
            return peak
    return None


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, short enough for a table cell."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit] if lines else ''}".strip()


def median(values: list[float]) -> float:
    """Median that tolerates an empty list (returns nan)."""
    return statistics.median(values) if values else math.nan


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for the table; '-' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class Clock:
    """Timestamps that are CUDA events on a GPU (no sync inside the loop) or wall time on CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def mark(self) -> Any:
        """Record a timestamp on the current stream."""
        import torch

        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        """Seconds between two marks; call after a synchronize."""
        if self.cuda:
            return float(start.elapsed_time(end)) / 1000.0
        return float(end - start)

    def sync(self) -> None:
        """Wait for the GPU so wall-clock readings mean something."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def sync_quietly(self) -> None:
        """Synchronize after an interruption, ignoring a broken CUDA state."""
        with contextlib.suppress(Exception):
            self.sync()


class StageTimer:
    """Times every transformer forward and VAE decode inside a pipeline call."""

    def __init__(self, transformer: Any, vae: Any, clock: Clock) -> None:
        self.clock = clock
        self.active = False
        self.forwards: list[tuple[Any, Any]] = []
        self.decodes: list[tuple[Any, Any]] = []
        self._open: Any = None
        transformer.register_forward_pre_hook(self._pre)
        transformer.register_forward_hook(self._post)
        original = vae.decode

        # The pipelines call `self.vae.decode(...)`; an instance attribute shadows the method.
        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return original(*args, **kwargs)
            start = self.clock.mark()
            out = original(*args, **kwargs)
            self.decodes.append((start, self.clock.mark()))
            return out

        vae.decode = timed_decode

    def _pre(self, module: Any, args: Any) -> None:
        if self.active:
            self._open = self.clock.mark()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        if self.active and self._open is not None:
            self.forwards.append((self._open, self.clock.mark()))
            self._open = None

    def start(self) -> None:
        """Begin recording."""
        self.forwards, self.decodes, self._open, self.active = [], [], None, True

    def stop(self) -> tuple[list[float], list[float]]:
        """Stop recording and return (forward seconds, decode seconds); syncs first."""
        self.active = False
        self.clock.sync()
        fwd = [self.clock.seconds(a, b) for a, b in self.forwards]
        dec = [self.clock.seconds(a, b) for a, b in self.decodes]
        return fwd, dec


@dataclass
class ModelRun:
    """One model family's built components and what was learnt about it so far."""

    cfg: dict[str, Any]
    transformer: Any = None
    vae: Any = None
    pipe: Any = None
    timer: StageTimer | None = None
    info: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None
    backend: str = "native"
    flops_b1: float | None = None
    eager_call_s: dict[int, float] = field(default_factory=dict)
    compiled: bool = False
    compile_error: str | None = None
    vae_s: dict[str, float] = field(default_factory=dict)
    compiled_shapes: set[tuple[str, int]] = field(default_factory=set)
    on_device: bool = True
    variant: dict[str, Any] = field(default_factory=dict)
    """The distilled preset's overrides (`steps`, `call`) while a speed row runs."""
    reference: Any = None
    """The eager row's decoded frames (CPU float tensor): what drift is measured against."""
    sample: Any = None
    """The decoded frames of the row being measured (its warm-up call)."""

    @property
    def name(self) -> str:
        """The model's name in the catalog."""
        return str(self.cfg["name"])


@dataclass
class Task:
    """One unit of planned work: prepare a model, or measure one setting."""

    kind: str  # prepare | pipeline | step
    run: ModelRun
    setting: str = "eager"  # eager | compiled | one of SPEED_SETTINGS
    batch: int = 1


SPEED_SETTINGS = ("fp8", "cache", "distilled", "fast")
"""Rows for the speed options, in the order they run; `fast` combines what its config lists."""


def decoded_frames(out: Any) -> Any:
    """A pipeline output's decoded frames or images as one float tensor on the CPU."""
    import torch

    frames = getattr(out, "frames", None)
    if frames is None:
        frames = out.images
    if isinstance(frames, list):
        frames = torch.stack([torch.as_tensor(f) for f in frames])
    return frames.detach().float().cpu()


def psnr(frames: Any, reference: Any) -> float | None:
    """PSNR in dB of decoded frames (values 0..1) against the reference; 100 when identical."""
    if reference is None or tuple(frames.shape) != tuple(reference.shape):
        return None
    mse = float(((frames.clamp(0, 1) - reference.clamp(0, 1)) ** 2).mean())
    return 100.0 if mse <= 1e-10 else min(100.0, 10 * math.log10(1.0 / mse))


class Bench:
    """Plans, runs, records and prints the benchmark."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.t0 = time.perf_counter()
        self.dry = bool(args.dry_run)
        self.cuda = not self.dry
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run on a machine without a GPU")
        self.device = torch.device("cuda" if self.cuda else "cpu")
        # bf16 is what the worker serves on a GPU; the CPU dry run checks wiring in float32.
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.clock = Clock(self.cuda)
        self.out_dir = Path(args.out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.runs = [ModelRun(cfg) for cfg in load_configs(args.models)]
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.compile_times: list[float] = []
        self.env = self._environment()
        self.peak = self._peak_tflops()
        self.park = self._should_park()

    # ----------------------------------------------------------------- environment

    def _environment(self) -> dict[str, Any]:
        import diffusers
        import torch

        env: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "cuda": torch.version.cuda,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "dry_run": self.dry,
            "argv": sys.argv[1:],
        }
        try:
            import transformers

            env["transformers"] = transformers.__version__
        except ImportError:  # not needed: text encoders are never built
            env["transformers"] = None
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            env.update(
                gpu=torch.cuda.get_device_name(self.device),
                gpu_memory_gb=round(props.total_memory / 1e9, 1),
                sm_count=props.multi_processor_count,
                capability=f"{props.major}.{props.minor}",
                cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
            )
        else:
            env.update(gpu=None, cpu=platform.processor() or platform.machine())
            env["cpu_threads"] = torch.get_num_threads()
        return env

    def _peak_tflops(self) -> float | None:
        if self.args.peak_tflops:
            self.env["peak_source"] = "--peak-tflops"
            return float(self.args.peak_tflops)
        gpu = self.env.get("gpu")
        peak = peak_tflops_for(gpu) if gpu else None
        self.env["peak_source"] = "name table" if peak else None
        if gpu and peak is None:
            self.notes.append(f"no bf16 peak known for {gpu!r}: MFU left out (use --peak-tflops)")
        return peak

    def _should_park(self) -> bool:
        # All four families together hold about 37 GB of bf16 weights; on a smaller card the
        # idle ones wait in host memory instead.
        if not self.cuda or self.args.park == "never":
            return False
        if self.args.park == "always":
            return True
        return float(self.env.get("gpu_memory_gb", 0)) < 70

    def elapsed(self) -> float:
        """Seconds since the benchmark started."""
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        """Seconds left in the budget."""
        return float(self.args.budget_s) - self.elapsed()

    # ----------------------------------------------------------------- building

    def build_component(self, spec: dict[str, Any]) -> Any:
        """Instantiate one transformer or VAE with random weights, on the device, in dtype."""
        import diffusers
        import torch

        cls = getattr(diffusers, spec["class"])
        config = component_config(spec, self.dry)
        build_on = self.device
        if self.cuda:
            n_params = count_parameters(spec, self.dry)
            free, _ = torch.cuda.mem_get_info(self.device)
            # Built in float32 (so init-time buffers such as RoPE tables keep full precision)
            # and cast after, like from_pretrained; fall back to host memory when it won't fit.
            if n_params * 4 > 0.8 * free:
                build_on = torch.device("cpu")
        with torch.device(build_on):
            model = cls.from_config(config)
        model.to(device=self.device, dtype=self.dtype)
        keep = getattr(cls, "_keep_in_fp32_modules", None) or []
        if keep and self.dtype != torch.float32:
            # from_pretrained keeps these in float32 even in a bf16 load; so does production.
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                if tensor.is_floating_point() and any(k in name for k in keep):
                    tensor.data = tensor.data.float()
        model.eval().requires_grad_(False)
        return model

    def prepare(self, run: ModelRun) -> None:
        """Build the pipeline, capture the denoiser inputs, count FLOPs, pick attention."""
        import diffusers
        import torch

        cfg = run.cfg
        t = time.perf_counter()
        run.transformer = self.build_component(cfg["transformer"])
        run.vae = self.build_component(cfg["vae"])
        self.clock.sync()
        build_s = time.perf_counter() - t
        sched_cls = getattr(diffusers, cfg["scheduler"]["class"])
        scheduler = sched_cls.from_config(cfg["scheduler"]["config"])
        pipe_cls = getattr(diffusers, cfg["pipeline"])
        run.pipe = pipe_cls(
            transformer=run.transformer,
            vae=run.vae,
            scheduler=scheduler,
            text_encoder=None,
            tokenizer=None,
            **cfg.get("pipeline_kwargs", {}),
        )
        run.pipe.set_progress_bar_config(disable=True)
        run.timer = StageTimer(run.transformer, run.vae, self.clock)
        weight_bytes = sum(
            x.numel() * x.element_size()
            for m in (run.transformer, run.vae)
            for x in [*m.parameters(), *m.buffers()]
        )
        n_transformer = sum(p.numel() for p in run.transformer.parameters())
        n_vae = sum(p.numel() for p in run.vae.parameters())
        run.info.update(
            source=cfg["source"],
            pipeline=cfg["pipeline"],
            transformer_class=cfg["transformer"]["class"],
            vae_class=cfg["vae"]["class"],
            transformer_params=n_transformer,
            vae_params=n_vae,
            full_size_params={
                "transformer": count_parameters(cfg["transformer"]) if self.dry else n_transformer,
                "vae": count_parameters(cfg["vae"]) if self.dry else n_vae,
            },
            weights_gb=round(weight_bytes / 1e9, 3),
            weight_bytes=weight_bytes,
            build_s=round(build_s, 3),
            text_encoder=cfg["text"]["encoder"],
        )
        geo = self.geometry(run, "bench")
        args, kwargs = self.capture(run, geo, batch=1)
        run.info["denoiser_inputs"] = describe_inputs(args, kwargs)
        run.flops_b1 = self.count_flops(run, args, kwargs)
        run.info["flops_per_forward_b1"] = run.flops_b1
        run.backend, probes = self.pick_attention(run, args, kwargs)
        run.info["attention_backend"] = run.backend
        run.info["attention_probe_ms"] = probes
        del args, kwargs
        if self.cuda:
            torch.cuda.empty_cache()

    def geometry(self, run: ModelRun, which: str) -> dict[str, Any]:
        """Sizes for a row: 'bench' (the pipeline rows) or 'fullsize' (the step row)."""
        section = run.cfg["dry_run"] if self.dry else run.cfg["bench"]
        geo = {
            "height": section["height"],
            "width": section["width"],
            "frames": section.get("frames"),
            "steps": section["steps"],
        }
        if which == "fullsize":
            geo.update(section["fullsize"])
        elif run.variant.get("steps"):
            geo["steps"] = int(run.variant["steps"])
        return geo

    def call_kwargs(self, run: ModelRun, geo: dict[str, Any], batch: int) -> dict[str, Any]:
        """Keyword arguments for one pipeline call with random text embeddings."""
        import torch

        text = run.cfg["text"]
        dim = int(run.transformer.config[text["dim_from"]])
        seq = int(self.section(run).get("seq_len", text["seq_len"]))
        dev, dt_ = self.device, self.dtype

        def embeds() -> Any:
            if text["form"] == "list":  # Z-Image takes one unpadded (seq, dim) tensor per prompt
                return [torch.randn(seq, dim, device=dev, dtype=dt_) for _ in range(batch)]
            return torch.randn(batch, seq, dim, device=dev, dtype=dt_)

        kwargs: dict[str, Any] = {
            "height": geo["height"],
            "width": geo["width"],
            "num_inference_steps": geo["steps"],
            # Decoded frames stay a GPU tensor: PNG/MP4 encoding is not the GPU's work.
            "output_type": "pt",
            "generator": torch.Generator(device=dev).manual_seed(0),
            "prompt_embeds": embeds(),
            **run.cfg.get("call", {}),
            **run.variant.get("call", {}),
        }
        if geo.get("frames"):
            kwargs["num_frames"] = geo["frames"]
        if text.get("negative"):
            kwargs["negative_prompt_embeds"] = embeds()
        if text.get("mask"):
            kwargs["prompt_attention_mask"] = torch.ones(batch, seq, dtype=torch.long, device=dev)
            if text.get("negative"):
                kwargs["negative_prompt_attention_mask"] = torch.ones_like(
                    kwargs["prompt_attention_mask"]
                )
        return kwargs

    def capture(
        self, run: ModelRun, geo: dict[str, Any], batch: int
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Run the pipeline up to its first denoiser call and return that call's inputs."""
        box: dict[str, Any] = {}

        def hook(module: Any, args: Any, kwargs: Any) -> None:
            box["args"], box["kwargs"] = args, kwargs
            raise Captured

        handle = run.transformer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            run.pipe(**self.call_kwargs(run, geo, batch))
        except Captured:
            pass
        finally:
            handle.remove()
        if "args" not in box:
            raise RuntimeError("the pipeline finished without calling its transformer")
        return box["args"], box["kwargs"]

    def count_flops(self, run: ModelRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
        """FLOPs of one denoiser forward, counted by torch (outside any timing)."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        # Counted with torch's own SDPA: an external attention kernel would be invisible to
        # the counter and leave attention out of the MFU.
        run.transformer.set_attention_backend("native")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run.transformer(*args, **kwargs)
        self.clock.sync()
        return float(counter.get_total_flops())

    def pick_attention(
        self, run: ModelRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Time one forward per available attention backend and keep the fastest."""
        import torch

        candidates = []
        if self.args.attention:
            candidates = [self.args.attention]
        else:
            # Only backends that need no download: flash-attn 3 / 2 when installed, cuDNN and
            # torch's default SDPA dispatch (FlashAttention-2 or memory-efficient) always.
            if importlib.util.find_spec("flash_attn_interface"):
                candidates.append("_flash_3")
            if importlib.util.find_spec("flash_attn"):
                candidates.append("flash")
            # On the CPU dry run cuDNN fails, which exercises the fallback path.
            candidates += ["_native_cudnn", "native"]
        probes: dict[str, Any] = {}
        best, best_s = "native", math.inf
        with torch.no_grad():
            for name in candidates:
                try:
                    run.transformer.set_attention_backend(name)
                    run.transformer(*args, **kwargs)  # warm up: kernel selection, autotune
                    self.clock.sync()
                    run.timer.start()  # type: ignore[union-attr]
                    for _ in range(2):
                        run.transformer(*args, **kwargs)
                    fwd, _ = run.timer.stop()  # type: ignore[union-attr]
                    seconds = median(fwd)
                    probes[name] = round(seconds * 1000, 2)
                    if seconds < best_s:
                        best, best_s = name, seconds
                except Exception as exc:  # a backend may refuse these shapes or this GPU
                    probes[name] = "error: " + describe_error(exc, 160)
                    if run.timer is not None:
                        run.timer.active = False
        run.transformer.set_attention_backend(best)
        return best, probes

    # ----------------------------------------------------------------- compiling

    def compile_transformer(self, run: ModelRun) -> str:
        """Compile the transformer's repeated blocks once; later calls pay the compile."""
        how = self.compile_module(run.transformer)
        run.compiled = True
        run.info["compile"] = how + (" backend=eager (dry run)" if self.dry else "")
        return how

    def compile_module(self, transformer: Any) -> str:
        """Compile one transformer's repeated blocks in place; say how."""
        import torch

        opts: dict[str, Any] = {"fullgraph": True}
        if self.dry:
            # The CPU dry run only traces (catches graph breaks); inductor on CPU is too slow.
            opts["backend"] = "eager"
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else None
        # Each block variant and each new batch size is one more compiled graph per block type.
        setattr(torch._dynamo.config, limit or "cache_size_limit", 64)
        if hasattr(transformer, "compile_repeated_blocks"):
            transformer.compile_repeated_blocks(**opts)
            how = "compile_repeated_blocks(fullgraph=True)"
        else:
            names = set(getattr(transformer, "_repeated_blocks", None) or [])
            blocks = [m for m in transformer.modules() if type(m).__name__ in names]
            if not blocks:
                raise RuntimeError("no repeated blocks to compile")
            for block in blocks:
                block.compile(**opts)
            how = f"torch.compile of {len(blocks)} blocks (fullgraph=True)"
        return how

    @contextlib.contextmanager
    def stance(self, run: ModelRun, setting: str) -> Iterator[None]:
        """Run compiled code, or force eager on a model whose blocks were compiled earlier."""
        import torch

        # Every row but the compiled ones runs the eager blocks (`fast` compiles its own copy).
        if setting not in ("compiled", "fast") and run.compiled:
            with torch.compiler.set_stance("force_eager"):
                yield
        else:
            yield

    # ----------------------------------------------------------------- speed options

    def speed_parts(self, run: ModelRun, setting: str) -> list[str]:
        """The options a speed row applies: itself, or what `fast` combines."""
        speed = run.cfg.get("speed", {})
        if setting == "fast":
            return [str(part) for part in speed.get("fast", [])]
        return [setting] if setting in speed else []

    def quantize_fp8(self, transformer: Any) -> str:
        """fp8 as reelbot.generation.speed does it: torchao float8 on 8.9+, else layerwise."""
        import torch

        if self.cuda and torch.cuda.get_device_capability(self.device) >= (8, 9):
            try:
                from torchao.quantization import (
                    Float8DynamicActivationFloat8WeightConfig,
                    PerRow,
                    quantize_,
                )
            except ImportError:
                self.note_once("torchao is not installed: fp8 rows use layerwise casting")
            else:
                quantize_(
                    transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
                )
                return "torchao float8 (per-row)"
        transformer.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=self.dtype
        )
        return "layerwise fp8 casting"

    def cache_config(self, spec: dict[str, Any]) -> Any:
        """The diffusers cache hook config a config's `speed.cache` names."""
        import diffusers.hooks
        import torch

        args = {k: v for k, v in spec.items() if k != "kind"}
        if spec["kind"] == "taylorseer":
            # As the worker does: bf16 Taylor factors lose the small step-to-step differences.
            args.setdefault("taylor_factors_dtype", torch.float32)
        names = {
            "first_block": "FirstBlockCacheConfig",
            "mag": "MagCacheConfig",
            "taylorseer": "TaylorSeerCacheConfig",
        }
        return getattr(diffusers.hooks, names[spec["kind"]])(**args)

    def eager_because(self, fp8: str, parts: list[str], speed: dict[str, Any]) -> str | None:
        """Why a combination cannot compile (as reelbot.generation.speed decides), or None."""
        # fullgraph=True turns these hooks' graph breaks into errors (found on the dry run).
        if "fp8" in parts and fp8.startswith("layerwise"):
            return "layerwise fp8 casting does not compile"
        if "cache" in parts and speed["cache"]["kind"] in ("first_block", "mag"):
            return f"the {speed['cache']['kind']} cache hook does not compile"
        return None

    def copy_transformer(self, run: ModelRun) -> Any:
        """A second transformer with the same weights, to quantize or compile on its own."""
        copy = self.build_component(run.cfg["transformer"])
        # state_dict keys do not change when blocks are compiled in place.
        copy.load_state_dict(run.transformer.state_dict())
        copy.set_attention_backend(run.backend)
        timer = run.timer
        assert timer is not None
        copy.register_forward_pre_hook(timer._pre)
        copy.register_forward_hook(timer._post)
        return copy

    @contextlib.contextmanager
    def speed_variant(self, run: ModelRun, setting: str, row: dict[str, Any]) -> Iterator[None]:
        """Apply a speed row's options for the duration of the row, then undo them."""
        import diffusers
        import torch

        parts = self.speed_parts(run, setting)
        if setting not in SPEED_SETTINGS:
            yield
            return
        if not parts:
            raise RuntimeError(f"{run.name} has no speed.{setting} in its config")
        speed = run.cfg["speed"]
        original = (run.transformer, run.pipe)
        applied: list[str] = []
        cached = None
        try:
            if "fp8" in parts or "compiled" in parts:
                copy = self.copy_transformer(run)
                if "fp8" in parts:
                    applied.append(self.quantize_fp8(copy))
                blocker = self.eager_because(applied[-1] if applied else "", parts, speed)
                if "compiled" in parts and blocker:
                    applied.append(f"eager: {blocker}")
                elif "compiled" in parts:
                    self.compile_module(copy)
                    applied.append("compiled")
                run.transformer = copy
                run.pipe = getattr(diffusers, run.cfg["pipeline"])(
                    transformer=copy,
                    vae=run.vae,
                    scheduler=run.pipe.scheduler,
                    text_encoder=None,
                    tokenizer=None,
                    **run.cfg.get("pipeline_kwargs", {}),
                )
                run.pipe.set_progress_bar_config(disable=True)
            if "cache" in parts:
                cached = run.transformer
                cached.enable_cache(self.cache_config(speed["cache"]))
                applied.append(f"cache {speed['cache']}")
            if "distilled" in parts:
                run.variant = dict(speed["distilled"])
                applied.append(f"distilled {run.variant.get('steps')} steps")
            row["steps"] = self.geometry(run, "bench")["steps"]
            row["default_steps"] = run.variant.get("steps", row["default_steps"])
            row["note"] = (row["note"] + " " + ", ".join(applied)).strip()
            if "cache" in parts:
                # Skipped blocks still count in the FLOPs: no MFU for a cached row.
                row["note"] += "; MFU left out (skipped work)"
            yield
            if "cache" in parts:
                row.update(tflops=None, mfu=None)
        finally:
            if cached is not None:
                cached.disable_cache()
            run.variant = {}
            if run.transformer is not original[0]:
                run.transformer, run.pipe = original
                if self.cuda:
                    torch.cuda.empty_cache()

    def drift(self, run: ModelRun, row: dict[str, Any]) -> None:
        """The eager row keeps its frames; every other batch-1 row is compared with them."""
        if row["setting"] == "eager":
            run.reference = run.sample
            row["psnr_db"] = None
        elif run.reference is not None and run.sample is not None:
            row["psnr_db"] = psnr(run.sample, run.reference)
        run.sample = None

    def note_once(self, text: str) -> None:
        """Add a note to the results, once."""
        if text not in self.notes:
            self.notes.append(text)

    # ----------------------------------------------------------------- measuring

    def repeats_for(self, call_s: float | None) -> int:
        """Fewer repeats for long calls so the budget reaches more settings."""
        if self.args.repeats:
            return int(self.args.repeats)
        if self.dry:
            return 1
        if call_s is not None and call_s > 5:
            return 2
        return 3

    def memory_base(self) -> int:
        """Allocated bytes before a measurement, after resetting the peak counter."""
        import torch

        if not self.cuda:
            return 0
        torch.cuda.reset_peak_memory_stats(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def memory_peak(self, run: ModelRun, base: int) -> tuple[float | None, float | None]:
        """(peak GB as if this model were alone on the card, peak GB of the whole process)."""
        import torch

        if not self.cuda:
            return None, None
        peak = int(torch.cuda.max_memory_allocated(self.device))
        own = int(run.info.get("weight_bytes", 0))
        # `base` holds every resident model's weights; keep this model's only.
        return round((peak - base + own) / 1e9, 2), round(peak / 1e9, 2)

    def measure_pipeline(self, run: ModelRun, row: dict[str, Any], batch: int) -> None:
        """Warm up once, then time full pipeline calls and fill the row.

        The warm-up call runs from fixed embeddings and seed; its decoded frames are the row's
        sample for the drift against the eager row (``drift``).
        """
        import torch

        geo = self.geometry(run, "bench")
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            torch.manual_seed(1234)
            kwargs = self.call_kwargs(run, geo, batch)
        timer = run.timer
        assert timer is not None
        self.clock.sync()
        t = time.perf_counter()
        run.sample = decoded_frames(run.pipe(**kwargs))
        self.clock.sync()
        first = time.perf_counter() - t
        repeats = self.repeats_for(first)
        walls, denoise, decode, fwd_all, n_fwd = [], [], [], [], 0
        base = self.memory_base()
        for _ in range(repeats):
            timer.start()
            t = time.perf_counter()
            run.pipe(**kwargs)
            fwd, dec = timer.stop()  # syncs
            walls.append(time.perf_counter() - t)
            denoise.append(sum(fwd))
            decode.append(sum(dec))
            fwd_all += fwd
            n_fwd = len(fwd)
        s_call = median(walls)
        steps = int(geo["steps"])
        denoise_s = median(denoise)
        step_s = denoise_s / steps
        default_steps = int(
            run.variant.get("steps")
            or (run.cfg["dry_run"] if self.dry else run.cfg["bench"])["default_steps"]
        )
        peak_gb, peak_total = self.memory_peak(run, base)
        flops = (run.flops_b1 or 0.0) * batch * n_fwd
        tflops = flops / denoise_s / 1e12 if denoise_s > 0 and flops else None
        row.update(
            repeats=repeats,
            first_call_s=first,
            s_call=s_call,
            # The spread shows a recompile or a hiccup inside the timed calls.
            s_call_min=min(walls),
            s_call_max=max(walls),
            s_item=s_call / batch,
            denoise_s=denoise_s,
            step_s=step_s,
            fwd_s=median(fwd_all),
            n_fwd=n_fwd,
            vae_s=median(decode),
            other_s=max(s_call - denoise_s - median(decode), 0.0),
            # A full-length run at the model's default steps, from the measured step time.
            est_default_s=(s_call + step_s * (default_steps - steps)) / batch,
            peak_gb=peak_gb,
            peak_total_gb=peak_total,
            tflops=tflops,
            mfu=tflops / self.peak if tflops and self.peak else None,
        )
        if steps != default_steps:
            row["note"] = (row["note"] + f" est. adds {default_steps - steps} steps").strip()
        if batch == 1:
            run.vae_s[row["setting"]] = row["vae_s"]
        if row["setting"] == "eager":
            run.eager_call_s[batch] = s_call
        elif row["setting"] in ("compiled", "fast") and batch in run.eager_call_s:
            row["compile_s"] = max(first - run.eager_call_s[batch], 0.0)

    def measure_step(self, run: ModelRun, row: dict[str, Any]) -> None:
        """Time single denoiser forwards at the production video size (no VAE)."""
        import torch

        geo = self.geometry(run, "fullsize")
        args, kwargs = self.capture(run, geo, batch=1)
        key = "flops_per_forward_fullsize"
        if key not in run.info:
            with self.stance(run, "eager"):
                run.info[key] = self.count_flops(run, args, kwargs)
            run.transformer.set_attention_backend(run.backend)
        timer = run.timer
        assert timer is not None
        with torch.no_grad():
            self.clock.sync()
            t = time.perf_counter()
            run.transformer(*args, **kwargs)
            self.clock.sync()
            first = time.perf_counter() - t
            repeats = self.repeats_for(None) if self.dry else 2
            base = self.memory_base()
            timer.start()
            for _ in range(repeats):
                run.transformer(*args, **kwargs)
            fwd, _ = timer.stop()
        fwd_s = median(fwd)
        per_step = int(run.cfg.get("forwards_per_step", 1))
        default_steps = int((run.cfg["dry_run"] if self.dry else run.cfg["bench"])["default_steps"])
        peak_gb, peak_total = self.memory_peak(run, base)
        tflops = run.info[key] / fwd_s / 1e12 if fwd_s > 0 else None
        # The VAE was timed at the pipeline rows' frame count; its chunked causal decode
        # scales about linearly with frames, so scale it to this row's length.
        bench_geo = self.geometry(run, "bench")
        vae_s = run.vae_s.get(row["setting"], run.vae_s.get("eager"))
        vae_est = None
        if vae_s is not None and bench_geo.get("frames") and geo.get("frames"):
            vae_est = vae_s * geo["frames"] / bench_geo["frames"]
        row.update(
            repeats=repeats,
            first_call_s=first,
            fwd_s=fwd_s,
            n_fwd=per_step,
            step_s=fwd_s * per_step,
            vae_est_s=vae_est,
            est_default_s=fwd_s * per_step * default_steps + (vae_est or 0.0),
            peak_gb=peak_gb,
            peak_total_gb=peak_total,
            tflops=tflops,
            mfu=tflops / self.peak if tflops and self.peak else None,
        )
        if row["setting"] == "compiled" and run.eager_call_s.get(-1):
            row["compile_s"] = max(first - run.eager_call_s[-1], 0.0)
        if row["setting"] == "eager":
            run.eager_call_s[-1] = fwd_s
        how = (
            f"VAE scaled from {bench_geo['frames']}f" if vae_est is not None else "VAE not included"
        )
        row["note"] = row.get("note", "") + f" one forward; est = step x default steps, {how}"
        row["note"] = row["note"].strip()

    # ----------------------------------------------------------------- planning

    def plan(self) -> list[Task]:
        """Most important numbers first: eager batch 1, compiled batch 1, then batches."""
        tasks: list[Task] = []
        compile_on = not self.args.no_compile
        for run in self.runs:
            tasks += [Task("prepare", run), Task("pipeline", run, "eager", 1)]
        videos = [r for r in self.runs if "fullsize" in self.section(r)]
        images = [r for r in self.runs if r.cfg["kind"] == "image"]
        tasks += [Task("step", r, "eager") for r in videos]
        if compile_on:
            # Images first: they are most of the traffic.
            for run in images + [r for r in self.runs if r not in images]:
                tasks.append(Task("pipeline", run, "compiled", 1))
        for run in self.runs:
            for setting in SPEED_SETTINGS:
                parts = self.speed_parts(run, setting)
                if parts and (compile_on or "compiled" not in parts):
                    tasks.append(Task("pipeline", run, setting, 1))
        for run in images:
            tasks += [Task("pipeline", run, "eager", b) for b in self.batches(run) if b != 1]
        # The dry run traces each family once (batch 1); more compiled shapes add CI time only.
        if compile_on and not self.dry:
            for run in images:
                tasks += [Task("pipeline", run, "compiled", b) for b in self.batches(run) if b != 1]
            tasks += [Task("step", r, "compiled") for r in videos]
        return tasks

    def section(self, run: ModelRun) -> dict[str, Any]:
        """The size section that applies: the dry run's or the benchmark's."""
        return dict(run.cfg["dry_run"] if self.dry else run.cfg["bench"])

    def batches(self, run: ModelRun) -> list[int]:
        """Batch sizes for a model; --batches overrides the image models' list."""
        if self.args.batches and run.cfg["kind"] == "image":
            return [int(b) for b in self.args.batches.split(",")]
        return [int(b) for b in self.section(run)["batches"]]

    def estimate(self, task: Task) -> float:
        """Rough seconds a task will take, from what was measured so far."""
        run = task.run
        if task.kind == "prepare":
            return 2.0 if self.dry else GUESS_PREPARE_S
        call = run.eager_call_s.get(1) or float(self.section(run).get("est_call_s", 5.0))
        if task.kind == "step":
            fwd = run.eager_call_s.get(-1) or float(self.section(run).get("est_fwd_s", 2.0))
            cost = 6 * fwd
        else:
            cost = call * task.batch * (1 + self.repeats_for(call * task.batch))
        if task.setting == "fast" and "compiled" in self.speed_parts(run, "fast"):
            cost += max(self.compile_times, default=5.0 if self.dry else GUESS_COMPILE_S)
        if task.setting == "compiled" and (task.kind, task.batch) not in run.compiled_shapes:
            guess = max(self.compile_times, default=5.0 if self.dry else GUESS_COMPILE_S)
            # A second new shape mostly reuses the dynamic-shape graphs the first one made.
            cost += guess if len(run.compiled_shapes) < 2 else 0.3 * guess
        return cost

    # ----------------------------------------------------------------- running

    def new_row(self, task: Task) -> dict[str, Any]:
        """A row with the identifying fields filled in."""
        which = "fullsize" if task.kind == "step" else "bench"
        geo = self.geometry(task.run, which)
        size = f"{geo['width']}x{geo['height']}" + (f"x{geo['frames']}f" if geo["frames"] else "")
        return {
            "model": task.run.name,
            "mode": task.kind,
            "setting": task.setting,
            "batch": task.batch,
            "size": size,
            "steps": geo["steps"] if task.kind == "pipeline" else 1,
            "default_steps": self.section(task.run)["default_steps"],
            "attention": task.run.backend,
            "status": "ok",
            "note": "",
        }

    def residency(self, run: ModelRun) -> None:
        """On small cards keep only the model being measured on the GPU."""
        import torch

        if not self.park:
            return
        for other in self.runs:
            if other is not run and other.on_device and other.transformer is not None:
                other.transformer.to("cpu")
                other.vae.to("cpu")
                other.on_device = False
        if not run.on_device and run.transformer is not None:
            run.transformer.to(self.device)
            run.vae.to(self.device)
            run.on_device = True
        torch.cuda.empty_cache()

    def execute(self, task: Task) -> None:
        """Run one task, recording a row (ok, skipped or error); never raises on failure."""
        import torch

        run = task.run
        if task.kind == "prepare":
            cost = self.estimate(task)
            if cost > self.remaining():
                run.failed = "skipped: out of time budget before it was built"
                return
            log(f"[{self.elapsed():6.1f}s] build {run.name}")
            try:
                self.residency(run)
                self.prepare(run)
                i = run.info
                log(
                    f"[{self.elapsed():6.1f}s]   {run.name}: transformer "
                    f"{i['transformer_params'] / 1e9:.3f}B, vae {i['vae_params'] / 1e6:.1f}M "
                    f"params, built in {i['build_s']:.1f}s, attention {run.backend} "
                    f"{i['attention_probe_ms']}"
                )
            except Exception as exc:
                run.failed = f"build failed: {describe_error(exc)}"
                traceback.print_exc()
                log(f"[{self.elapsed():6.1f}s]   {run.name}: {run.failed}")
                run.transformer = run.vae = run.pipe = None
                if self.cuda:
                    torch.cuda.empty_cache()
            self.write()
            return

        row = self.new_row(task)
        if run.failed:
            row.update(status="skipped", note=run.failed)
            self.finish(row)
            return
        if task.setting == "compiled" and run.compile_error:
            row.update(status="skipped", note=f"compile failed earlier: {run.compile_error}")
            self.finish(row)
            return
        cost = self.estimate(task)
        if cost > self.remaining():
            row.update(
                status="skipped",
                note=f"budget: needs ~{cost:.0f}s, {max(self.remaining(), 0):.0f}s left",
            )
            self.finish(row)
            return
        log(
            f"[{self.elapsed():6.1f}s] {run.name} {task.kind} {task.setting} b{task.batch} "
            f"{row['size']} (est {cost:.0f}s)"
        )
        self.residency(run)
        for attempt in (1, 2):
            try:
                if task.setting == "compiled" and not run.compiled:
                    self.compile_transformer(run)
                row["attention"] = run.backend
                with self.stance(run, task.setting), self.speed_variant(run, task.setting, row):
                    if task.kind == "pipeline":
                        self.measure_pipeline(run, row, task.batch)
                        if task.batch == 1:
                            self.drift(run, row)
                    else:
                        self.measure_step(run, row)
                if task.setting == "compiled":
                    run.compiled_shapes.add((task.kind, task.batch))
                    if row.get("compile_s") and task.batch == 1:
                        self.compile_times.append(float(row["compile_s"]))
                break
            except Exception as exc:
                if run.timer is not None:
                    run.timer.active = False
                traceback.print_exc()
                message = describe_error(exc)
                if self.cuda:
                    torch.cuda.empty_cache()
                retry = attempt == 1 and run.backend != "native" and cost < self.remaining()
                if retry and "out of memory" not in message:
                    # The fastest backend was chosen at batch 1; a new shape may not suit it.
                    row["note"] = f"{run.backend} failed ({message[:120]}); retried with native"
                    run.backend = "native"
                    run.transformer.set_attention_backend("native")
                    continue
                row.update(status="error", note=(row["note"] + " " + message).strip())
                if task.setting == "compiled" and task.batch == 1:
                    # A failed first compile would be retried (and fail) on every later call.
                    run.compile_error = message[:200]
                break
        self.finish(row)

    def finish(self, row: dict[str, Any]) -> None:
        """Store a row, print it as one line, and rewrite the JSON."""
        self.rows.append(row)
        if row["status"] == "ok":
            log(
                f"[{self.elapsed():6.1f}s]   -> {row['model']} {row['mode']} {row['setting']} "
                f"b{row['batch']}: s/item {fmt(row.get('s_item'))}, "
                f"step {fmt(row.get('step_s'))}s, vae {fmt(row.get('vae_s'))}s, "
                f"peak {fmt(row.get('peak_gb'))} GB, "
                f"MFU {fmt(row.get('mfu'))}, compile {fmt(row.get('compile_s'))}s"
            )
        else:
            log(
                f"[{self.elapsed():6.1f}s]   -> {row['model']} {row['mode']} {row['setting']} "
                f"b{row['batch']}: {row['status']}: {row['note']}"
            )
        self.write()

    def result(self) -> dict[str, Any]:
        """Everything measured so far, as written to gpu.json."""
        models = {}
        for run in self.runs:
            info = {k: v for k, v in run.info.items() if k != "weight_bytes"}
            info["status"] = "failed" if run.failed else ("ok" if run.info else "not built")
            if run.failed:
                info["error"] = run.failed
            info["bench"] = self.section(run)
            models[run.name] = info
        return {
            "schema": SCHEMA_VERSION,
            "env": self.env,
            "peak_bf16_tflops": self.peak,
            "budget_s": self.args.budget_s,
            "elapsed_s": round(self.elapsed(), 1),
            "notes": self.notes,
            "models": models,
            "rows": [clean(r) for r in self.rows],
        }

    def write(self) -> None:
        """Atomically rewrite OUT/gpu.json so a killed run still leaves valid results."""
        path = self.out_dir / "gpu.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result(), indent=2, default=str) + "\n")
        os.replace(tmp, path)

    def table(self) -> None:
        """Print the results as a rich table."""
        from rich.console import Console
        from rich.table import Table

        console = Console(width=None if sys.stdout.isatty() else 200)
        gpu = self.env.get("gpu") or f"CPU ({self.env.get('cpu')}) dry run"
        title = (
            f"reelbot GPU bench: {gpu}, torch {self.env['torch']}, diffusers "
            f"{self.env['diffusers']}, {self.env['dtype']}, {self.env['date']}"
        )
        table = Table(title=title, title_justify="left")
        for col, justify in [
            ("model", "left"),
            ("mode", "left"),
            ("setting", "left"),
            ("b", "right"),
            ("size", "left"),
            ("steps", "right"),
            ("s/item", "right"),
            ("step s", "right"),
            ("fwd s", "right"),
            ("VAE s", "right"),
            ("est. s @default", "right"),
            ("peak GB", "right"),
            ("TFLOP/s", "right"),
            ("MFU", "right"),
            ("compile s", "right"),
            ("PSNR dB", "right"),
            ("attn", "left"),
            ("note", "left"),
        ]:
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for r in self.rows:
            ok = r["status"] == "ok"
            mfu = r.get("mfu")
            table.add_row(
                r["model"],
                r["mode"],
                r["setting"],
                str(r["batch"]),
                r["size"],
                f"{r['steps']}/{r['default_steps']}" if r["mode"] == "pipeline" else "1",
                fmt(r.get("s_item")),
                fmt(r.get("step_s")),
                fmt(r.get("fwd_s")),
                fmt(r.get("vae_s")),
                fmt(r.get("est_default_s")),
                fmt(r.get("peak_gb")),
                fmt(r.get("tflops")),
                f"{mfu:.1%}" if mfu else "-",
                fmt(r.get("compile_s")),
                fmt(r.get("psnr_db")),
                r.get("attention", "-"),
                r["note"] if ok else f"[red]{r['status']}[/red] {r['note']}",
            )
        console.print(table)
        for note in self.notes:
            console.print(f"note: {note}")
        console.print(
            "pipeline = full pipeline call (denoise + VAE decode), random prompt_embeds, no text "
            "encoder; step = one denoiser forward at the production video size; est. s @default "
            "= per item at the model's default steps from the measured step time; peak GB = "
            "this model alone (other resident models' weights subtracted); MFU = counted FLOPs / "
            "denoiser time / bf16 dense peak"
            + (f" ({self.peak:g} TFLOP/s)" if self.peak else "")
            + "; PSNR dB = decoded frames against the eager row's (same embeddings and seed, 100 "
            "= identical): with random weights it shows the numerical drift of fp8, caching and "
            "compiling, not image quality, and the distilled rows (other steps and guidance) "
            "differ by construction"
        )

    def run(self) -> int:
        """Execute the plan within the budget; always print and write what was measured."""
        import torch

        log(
            f"reelbot GPU bench on {self.env.get('gpu') or 'CPU (dry run)'}; torch "
            f"{self.env['torch']}, diffusers {self.env['diffusers']}; budget "
            f"{self.args.budget_s}s; peak bf16 {self.peak} TFLOP/s; park idle models: {self.park}"
        )
        if self.cuda:
            # cuDNN picks the fastest conv algorithms for the VAEs; warm-up calls absorb it.
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        code = 0
        try:
            for task in self.plan():
                self.execute(task)
        except (KeyboardInterrupt, Interrupted):
            self.notes.append(f"interrupted after {self.elapsed():.0f}s (hard limit or signal)")
            self.clock.sync_quietly()
            code = 130
        finally:
            self.write()
            self.table()
            log(f"wrote {self.out_dir / 'gpu.json'} after {self.elapsed():.1f}s")
        return code


def describe_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Shapes of the captured denoiser inputs, for the JSON."""

    def shape(value: Any) -> Any:
        if hasattr(value, "shape"):
            return [list(value.shape), str(value.dtype).removeprefix("torch.")]
        if isinstance(value, list | tuple) and value and hasattr(value[0], "shape"):
            more = [f"... x{len(value)}"] if len(value) > 2 else []
            return [shape(v) for v in value[:2]] + more
        return None

    out = {f"arg{i}": shape(v) for i, v in enumerate(args)}
    out.update({k: shape(v) for k, v in kwargs.items()})
    return {k: v for k, v in out.items() if v is not None}


def clean(row: dict[str, Any]) -> dict[str, Any]:
    """Round floats and drop NaNs so the JSON stays readable and valid."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float):
            value = None if math.isnan(value) else round(value, 6)
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", required=True, help="folder for gpu.json")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny configs, float32 (CI)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip settings past this")
    p.add_argument(
        "--hard-limit-s",
        type=float,
        default=None,
        help="stop mid-setting, write and print what was measured (default: budget + 45)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak override")
    p.add_argument("--models", nargs="*", default=None, help="subset of models, by name")
    p.add_argument("--batches", default=None, help="image batch sizes, e.g. 1,4,8")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per setting")
    p.add_argument("--no-compile", action="store_true", help="eager settings only")
    p.add_argument("--attention", default=None, help="force a diffusers attention backend")
    p.add_argument(
        "--park",
        choices=["auto", "always", "never"],
        default="auto",
        help="move idle models to host memory (auto: on cards under 70 GB)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    missing = [m for m in ("torch", "diffusers", "rich") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"bench/gpu.py needs {', '.join(missing)} (pip install them, or carry wheels)"
        )
    # Quiet diffusers' per-call warnings (experimental attention API, unused config keys).
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted

    signal.signal(signal.SIGTERM, on_term)
    # The budget only skips settings that look too long; a compile that runs far past its
    # estimate is cut here so the run still ends on time with its table and JSON.
    hard = args.hard_limit_s if args.hard_limit_s is not None else args.budget_s + 45
    watchdog = threading.Timer(hard, lambda: os.kill(os.getpid(), signal.SIGTERM))
    watchdog.daemon = True
    watchdog.start()
    try:
        return Bench(args).run()
    finally:
        watchdog.cancel()


if __name__ == "__main__":
    sys.exit(main())
