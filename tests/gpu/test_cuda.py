"""The CUDA paths of the runner on the tiny models in bf16: dtype, compile, offload, batching.

Tiny models have random weights, so "the same image" is judged against how far apart two
seeds are: a variant of the same run must be far closer to it than another seed's image is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from reelbot.catalog import Catalog, Task
from reelbot.generation.gpu import GpuOptions
from reelbot.generation.runner import GenerationOutput, Runner
from reelbot.jobs import GenerationParams, resolve

pytestmark = pytest.mark.gpu

# A variant (compiled, offloaded, batched) may move pixels by bf16 rounding, at most this
# share of the distance between two different seeds' images.
BF16_SHARE = 0.1

RunnerFactory = Callable[..., Runner]


@pytest.fixture(scope="module")
def bf16_catalog(tiny_catalog: Catalog) -> Catalog:
    """The tiny set with every model in bf16, as the real set is."""
    models = {n: s.model_copy(update={"dtype": "bfloat16"}) for n, s in tiny_catalog.models.items()}
    return tiny_catalog.model_copy(update={"models": models})


@pytest.fixture
def make_runner(bf16_catalog: Catalog, tiny_data_dir: Path) -> RunnerFactory:
    """A fresh CUDA runner with the given options (each loads its own copy of a model)."""

    def make(gpu: GpuOptions, budget: int | None = None) -> Runner:
        return Runner(
            bf16_catalog,
            data_dir=tiny_data_dir,
            device="cuda",
            gpu=gpu,
            memory_budget_bytes=budget,
        )

    return make


EAGER = GpuOptions(compile=False)


def _params(catalog: Catalog, model: str, seed: int, prompt: str = "a red fox") -> GenerationParams:
    return resolve(Task.IMAGINE, f"{prompt} --model {model} --seed {seed} --steps 3", catalog)


def _pixels(out: GenerationOutput | BaseException) -> np.ndarray:
    assert isinstance(out, GenerationOutput), out
    return np.stack([np.asarray(f) for f in out.frames]).astype(np.float64)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _assert_close(variant: np.ndarray, reference: np.ndarray, other_seed: np.ndarray) -> None:
    scale = _distance(reference, other_seed)
    assert scale > 0, "two seeds gave the same image"
    assert _distance(variant, reference) <= BF16_SHARE * scale


def test_models_load_in_bf16_on_the_gpu(make_runner: RunnerFactory) -> None:
    runner = make_runner(EAGER)
    runner.preload("tiny-zimage")
    loaded = runner.loaded("tiny-zimage")
    assert loaded is not None
    pipe = loaded.pipeline(Task.IMAGINE)
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.transformer.device.type == "cuda"
    assert not loaded.offloaded


def test_compiled_blocks_give_the_eager_image(
    make_runner: RunnerFactory, bf16_catalog: Catalog
) -> None:
    eager = make_runner(EAGER)
    compiled = make_runner(GpuOptions())  # auto: compiles on CUDA, warms up at preload
    compiled.preload("tiny-zimage", Task.IMAGINE)
    loaded = compiled.loaded("tiny-zimage")
    assert loaded is not None
    transformer = loaded.pipeline(Task.IMAGINE).transformer
    block_types = set(transformer._repeated_blocks)
    blocks = [m for m in transformer.modules() if type(m).__name__ in block_types]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)

    params = _params(bf16_catalog, "tiny-zimage", 1)
    reference = _pixels(eager.generate(params))
    other = _pixels(eager.generate(params.model_copy(update={"seed": 2})))
    _assert_close(_pixels(compiled.generate(params)), reference, other)


def test_offload_runs_a_model_over_the_budget(
    make_runner: RunnerFactory, bf16_catalog: Catalog
) -> None:
    resident = make_runner(EAGER)
    offloaded = make_runner(EAGER, budget=1)  # every model is over one byte
    params = _params(bf16_catalog, "tiny-zimage", 1)
    out = offloaded.generate(params)
    loaded = offloaded.loaded("tiny-zimage")
    assert loaded is not None and loaded.offloaded
    # Between calls the weights wait on the CPU; each module visits the GPU only to run.
    assert next(loaded.pipeline(Task.IMAGINE).transformer.parameters()).device.type == "cpu"
    reference = _pixels(resident.generate(params))
    other = _pixels(resident.generate(params.model_copy(update={"seed": 2})))
    _assert_close(_pixels(out), reference, other)


@pytest.mark.parametrize("model", ["tiny-zimage", "tiny-flux2"])
def test_a_batch_gives_the_one_by_one_images(
    make_runner: RunnerFactory, bf16_catalog: Catalog, model: str
) -> None:
    runner = make_runner(EAGER)
    group = [
        _params(bf16_catalog, model, seed, prompt)
        for prompt, seed in [("a red fox", 1), ("a whale in the deep sea at night", 7), ("ok", 3)]
    ]
    alone = [_pixels(runner.generate(p)) for p in group]
    batched = runner.generate_batch([(p, None) for p in group])
    for k, out in enumerate(batched):
        assert isinstance(out, GenerationOutput) and out.timings["batch"] == 3
        _assert_close(_pixels(out), alone[k], alone[(k + 1) % 3])


def test_cudnn_attention_gives_the_sdpa_image(
    make_runner: RunnerFactory, bf16_catalog: Catalog
) -> None:
    sdpa = make_runner(EAGER)
    cudnn = make_runner(GpuOptions(compile=False, attention_backend="_native_cudnn"))
    params = _params(bf16_catalog, "tiny-flux2", 1)
    reference = _pixels(sdpa.generate(params))
    other = _pixels(sdpa.generate(params.model_copy(update={"seed": 2})))
    _assert_close(_pixels(cudnn.generate(params)), reference, other)
