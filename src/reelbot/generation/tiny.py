"""Offline tiny pipelines: random weights from small configs, saved like a hub folder.

Each builder follows the family's ``get_dummy_components()`` in diffusers' own tests
(``tests/pipelines/<family>/test_*.py``); where those tests fetch a tokenizer or a text-encoder
config from the hub, the tokenizer is built here from an in-memory vocabulary instead and the
encoder config sized to cover it. The folder is written with ``save_pretrained`` and read back
by ``registry`` through the same ``from_pretrained(path)`` call a real model takes, so the tiny
set exercises the real loading and calling code with outputs that are noise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import diffusers
import torch
import transformers

__all__ = [
    "BUILDERS",
    "BUILD_VERSION",
    "CAPTIONER",
    "FAMILIES",
    "MARKER",
    "PREVIEW_VAE",
    "TINY_SR",
    "bart_tokenizer",
    "build",
    "ensure_built",
    "ensure_sr_built",
    "is_built",
    "qwen_tokenizer",
    "t5_tokenizer",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Model and pipeline constructors are untyped (@register_to_config): call them through Any.
_diffusers: Any = diffusers

# Bump when a builder changes: folders with another version are rebuilt on next use.
BUILD_VERSION = 1
MARKER = "reelbot-tiny.json"
SEED = 0

# Minimal ChatML, the shape of Qwen3's template: Z-Image and FLUX.2 klein wrap the prompt with
# apply_chat_template (passing enable_thinking, which this template may ignore).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: 256 printable symbols, one per byte, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def qwen_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer (256 byte symbols, no merges) with a ChatML template."""
    vocab = {symbol: i for i, symbol in enumerate(_byte_alphabet())}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tokenizer = transformers.Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def t5_tokenizer() -> Any:
    """A unigram T5/UMT5 tokenizer of single characters: any prompt tokenizes, unknowns to <unk>."""
    chars = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x180)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars]
    return transformers.T5Tokenizer(vocab=pieces, extra_ids=0)


def _qwen3_config(tokenizer: Any, *, layers: int) -> Any:
    """The tests' tiny Qwen3 config, with the vocabulary and special ids of our tokenizer."""
    return transformers.Qwen3Config(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        # Qwen3's head_dim defaults to 128 whatever the width; 8 keeps attention tiny too.
        head_dim=8,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_kwargs(tokenizer: Any) -> dict[str, Any]:
    """hf-internal-testing/tiny-random-t5's sizes, with our vocabulary and special ids."""
    return {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "d_ff": 37,
        "d_kv": 8,
        "num_heads": 4,
        "num_layers": 2,
        "relative_attention_num_buckets": 8,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }


def _seeded(make: Callable[[], T]) -> T:
    """Build one component from a fixed seed, so every machine gets the same weights."""
    torch.manual_seed(SEED)
    return make()


def _build_zimage() -> Any:
    """Z-Image: tests/pipelines/z_image/test_z_image.py."""

    def transformer() -> Any:
        model: Any = _diffusers.ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            norm_eps=1e-5,
            qk_norm=True,
            cap_feat_dim=16,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[8, 4, 4],
            # The tests use [256, 32, 32]; prompts up to 512 tokens and 256 px sides need more.
            axes_lens=[1024, 128, 128],
        )
        # The pad tokens start as torch.empty: fix them, or outputs are NaN or machine-dependent.
        with torch.no_grad():
            model.x_pad_token.copy_(torch.ones_like(model.x_pad_token))
            model.cap_pad_token.copy_(torch.ones_like(model.cap_pad_token))
        return model

    tokenizer = qwen_tokenizer()
    return _diffusers.ZImagePipeline(
        transformer=_seeded(transformer),
        vae=_seeded(
            lambda: _diffusers.AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
                block_out_channels=[32, 64],
                layers_per_block=1,
                latent_channels=16,
                norm_num_groups=32,
                sample_size=32,
                scaling_factor=0.3611,
                shift_factor=0.1159,
            )
        ),
        scheduler=_diffusers.FlowMatchEulerDiscreteScheduler(),
        text_encoder=_seeded(lambda: transformers.Qwen3Model(_qwen3_config(tokenizer, layers=2))),
        tokenizer=tokenizer,
    )


# FLUX.2 klein stacks the text encoder's hidden states 9, 18 and 27 by default; a 28-layer
# encoder (still tiny at width 16) keeps the pipeline's defaults valid, as for the real model.
_KLEIN_TEXT_LAYERS = 28
_KLEIN_OUT_LAYERS = 3


def _build_flux2_klein() -> Any:
    """FLUX.2 klein: tests/pipelines/flux2/test_pipeline_flux2_klein.py."""
    tokenizer = qwen_tokenizer()
    hidden = 16
    return _diffusers.Flux2KleinPipeline(
        transformer=_seeded(
            lambda: _diffusers.Flux2Transformer2DModel(
                patch_size=1,
                in_channels=4,
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=hidden * _KLEIN_OUT_LAYERS,
                timestep_guidance_channels=256,
                axes_dims_rope=[4, 4, 4, 4],
                guidance_embeds=False,
            )
        ),
        text_encoder=_seeded(
            lambda: transformers.Qwen3ForCausalLM(
                _qwen3_config(tokenizer, layers=_KLEIN_TEXT_LAYERS)
            )
        ),
        tokenizer=tokenizer,
        vae=_seeded(
            lambda: _diffusers.AutoencoderKLFlux2(
                sample_size=32,
                in_channels=3,
                out_channels=3,
                # The tests use one block (scale 1); four give the real VAE's 8x downscale, so
                # a 64 px image is 16 packed tokens instead of 1024, and sizes step by 16.
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(4, 4, 4, 4),
                layers_per_block=1,
                latent_channels=1,
                norm_num_groups=1,
                use_quant_conv=False,
                use_post_quant_conv=False,
            )
        ),
        scheduler=_diffusers.FlowMatchEulerDiscreteScheduler(),
        # The served klein checkpoints are step-distilled: guidance is not applied.
        is_distilled=True,
    )


def _build_wan22() -> Any:
    """Wan 2.2 TI2V 5B: tests/pipelines/wan/test_wan_22_image_to_video.py (the 5B class).

    One folder serves WanPipeline and WanImageToVideoPipeline (``expand_timesteps``), like
    Wan-AI/Wan2.2-TI2V-5B-Diffusers.
    """
    tokenizer = t5_tokenizer()
    return _diffusers.WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(
            lambda: transformers.UMT5EncoderModel(transformers.UMT5Config(**_t5_kwargs(tokenizer)))
        ),
        vae=_seeded(
            lambda: _diffusers.AutoencoderKLWan(
                base_dim=3,
                z_dim=48,
                in_channels=12,
                out_channels=12,
                is_residual=True,
                patch_size=2,
                latents_mean=[0.0] * 48,
                latents_std=[1.0] * 48,
                dim_mult=[1, 1, 1, 1],
                num_res_blocks=1,
                scale_factor_spatial=16,
                scale_factor_temporal=4,
                temperal_downsample=[False, True, True],
            )
        ),
        scheduler=_diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        transformer=_seeded(
            lambda: _diffusers.WanTransformer3DModel(
                patch_size=(1, 2, 2),
                num_attention_heads=2,
                attention_head_dim=12,
                in_channels=48,
                out_channels=48,
                text_dim=32,
                freq_dim=256,
                ffn_dim=32,
                num_layers=2,
                cross_attn_norm=True,
                qk_norm="rms_norm_across_heads",
                rope_max_seq_len=32,
            )
        ),
        transformer_2=None,
        boundary_ratio=None,
        expand_timesteps=True,
    )


def _build_ltx() -> Any:
    """LTX-Video: tests/pipelines/ltx/test_ltx_image2video.py (the full VAE config)."""
    tokenizer = t5_tokenizer()
    return _diffusers.LTXPipeline(
        transformer=_seeded(
            lambda: _diffusers.LTXVideoTransformer3DModel(
                in_channels=8,
                out_channels=8,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=4,
                attention_head_dim=8,
                cross_attention_dim=32,
                num_layers=1,
                caption_channels=32,
            )
        ),
        vae=_seeded(
            lambda: _diffusers.AutoencoderKLLTXVideo(
                in_channels=3,
                out_channels=3,
                latent_channels=8,
                block_out_channels=(8, 8, 8, 8),
                decoder_block_out_channels=(8, 8, 8, 8),
                layers_per_block=(1, 1, 1, 1, 1),
                decoder_layers_per_block=(1, 1, 1, 1, 1),
                spatio_temporal_scaling=(True, True, False, False),
                decoder_spatio_temporal_scaling=(True, True, False, False),
                decoder_inject_noise=(False, False, False, False, False),
                upsample_residual=(False, False, False, False),
                upsample_factor=(1, 1, 1, 1),
                timestep_conditioning=False,
                patch_size=1,
                patch_size_t=1,
                encoder_causal=True,
                decoder_causal=False,
            )
        ),
        scheduler=_diffusers.FlowMatchEulerDiscreteScheduler(),
        text_encoder=_seeded(
            lambda: transformers.T5EncoderModel(transformers.T5Config(**_t5_kwargs(tokenizer)))
        ),
        tokenizer=tokenizer,
    )


FAMILIES: dict[str, Callable[[], Any]] = {
    "zimage": _build_zimage,
    "flux2_klein": _build_flux2_klein,
    "wan22": _build_wan22,
    "ltx": _build_ltx,
}
"""Family name (``ModelSpec.family``) → builder of its tiny pipeline."""

PREVIEW_VAE = "taesd16"
"""The tiny preview autoencoder (``preview_vae = "tiny"``): 16 latent channels, Z-Image's."""


def _build_taesd16() -> Any:
    """A TAESD-shaped ``AutoencoderTiny`` (diffusers' tests/models/autoencoders, smaller)."""
    return _seeded(
        lambda: _diffusers.AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=16,
        )
    )


CAPTIONER = "florence2"
"""The tiny /describe captioner's family (``family = "florence2"``, ``source = "tiny"``)."""


def bart_tokenizer() -> Any:
    """A byte-level BART tokenizer (Florence-2's kind): <s> <pad> </s> <unk>, the 256 byte
    symbols, no merges, and the ``<image>`` token the Florence-2 processor expands."""
    vocab = {special: i for i, special in enumerate(("<s>", "<pad>", "</s>", "<unk>"))}
    for symbol in _byte_alphabet():
        vocab[symbol] = len(vocab)
    vocab["<image>"] = len(vocab)
    return transformers.BartTokenizer(
        vocab=vocab,
        merges=[],
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


class _ModelAndProcessor:
    """A transformers model and its processor, saved into one folder as a hub repo holds them."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.components = {"model": model}
        self.processor = processor

    def save_pretrained(self, folder: Path) -> None:
        self.components["model"].save_pretrained(folder)
        self.processor.save_pretrained(folder)


def _build_florence2() -> Any:
    """Florence-2: tests/models/florence2/test_modeling_florence2.py in transformers (its
    tester's sizes), with our tokenizer and a 32 px image processor."""
    tokenizer = bart_tokenizer()
    bart = {
        "model_type": "bart",
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 256,
        "encoder_layers": 1,
        "encoder_ffn_dim": 16,
        "encoder_attention_heads": 1,
        "decoder_layers": 1,
        "decoder_ffn_dim": 16,
        "decoder_attention_heads": 1,
        "d_model": 16,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "decoder_start_token_id": tokenizer.eos_token_id,
        "forced_bos_token_id": tokenizer.bos_token_id,
    }
    vision = {
        "depths": [1],
        "patch_size": [7],
        "patch_stride": [4],
        "patch_padding": [3],
        "patch_prenorm": [False],
        "embed_dim": [16],
        "num_heads": [1],
        "num_groups": [1],
        "window_size": 12,
        "projection_dim": 16,
        "drop_path_rate": 0.0,
    }
    config = transformers.Florence2Config(
        text_config=bart, vision_config=vision, image_token_id=tokenizer.image_token_id
    )
    model: Any = _seeded(lambda: transformers.Florence2ForConditionalGeneration(config))
    model.eval()
    # Random weights never stop on their own: short suggestions keep /describe's tests fast.
    model.generation_config.max_new_tokens = 8
    side = 32
    with torch.no_grad():
        # The processor writes one <image> token per image feature: count them once.
        features = model.get_image_features(pixel_values=torch.zeros(1, 3, side, side))
    images = transformers.CLIPImageProcessorPil(
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        do_center_crop=False,
        image_seq_length=int(features.pooler_output.shape[1]),
    )
    processor = transformers.Florence2Processor(image_processor=images, tokenizer=tokenizer)
    return _ModelAndProcessor(model, processor)


BUILDERS: dict[str, Callable[[], Any]] = {
    **FAMILIES,
    PREVIEW_VAE: _build_taesd16,
    CAPTIONER: _build_florence2,
}
"""Everything ``ensure_built`` makes: the pipelines, and single models saved the same way."""


def _marker(family: str) -> dict[str, str | int]:
    # The library versions are part of the key: a folder saved by another diffusers or
    # transformers may not load the same way, and a rebuild takes about a second.
    return {
        "family": family,
        "build_version": BUILD_VERSION,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def is_built(folder: Path, family: str) -> bool:
    """Whether ``folder`` holds a complete tiny build of ``family`` from this builder."""
    try:
        found = json.loads((folder / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return bool(found == _marker(family))


def build(family: str, folder: Path) -> None:
    """Build ``family``'s tiny pipeline and save it into ``folder`` (which must not exist)."""
    try:
        builder = BUILDERS[family]
    except KeyError:
        known = ", ".join(sorted(BUILDERS))
        raise ValueError(f"no tiny builder for family {family!r} (known: {known})") from None
    # fork_rng keeps the caller's global RNG untouched by the fixed build seed.
    with torch.random.fork_rng(devices=[]):
        pipe = builder()
    for component in getattr(pipe, "components", {"model": pipe}).values():
        if isinstance(component, torch.nn.Module):
            # Modules built from a config start in training mode; save them as they will run.
            component.eval()
    pipe.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps(_marker(family)), "utf-8")


def ensure_built(family: str, data_dir: Path) -> Path:
    """The folder of ``family``'s tiny pipeline under ``data_dir/tiny``, built if missing or stale.

    The build goes into a temporary folder beside the target and is renamed into place, so a
    crash or a second process building at the same time never leaves a half-written model.
    """
    root = data_dir / "tiny"
    target = root / family
    if is_built(target, family):
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
    try:
        staged = scratch / family
        log.info("building tiny %s model in %s", family, target)
        build(family, staged)
        if target.exists():
            if is_built(target, family):
                return target  # another process finished first
            # Stale: move it aside first so the rename below is a single step.
            os.replace(target, scratch / "stale")
        try:
            os.replace(staged, target)
        except OSError:
            if not is_built(target, family):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


TINY_SR = "sr-compact-x4.safetensors"
"""The tiny upscaler's file under ``data_dir/tiny`` (``weights = "tiny"`` in the model TOML)."""


def ensure_sr_built(data_dir: Path) -> Path:
    """A tiny random Real-ESRGAN compact network (×4), saved with the published key names and
    read back by ``upscale.load_sr`` like a downloaded file; written once, atomically."""
    from safetensors.torch import save_file

    from reelbot.generation.upscale import SRVGGNetCompact

    target = data_dir / "tiny" / TINY_SR
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = SRVGGNetCompact(num_feat=8, num_conv=2, scale=4)
        # Small weights: the output stays near the nearest-upsampled input, a picture, not noise.
        with torch.no_grad():
            for param in net.parameters():
                param.mul_(0.1)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    staged = target.with_name(f".{target.name}.{os.getpid()}")
    save_file(state, str(staged))
    os.replace(staged, target)
    return target
