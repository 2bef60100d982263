"""/describe: an image in, four prompt suggestions out, from a Florence-2 captioner.

The captioner is transformers' own ``Florence2ForConditionalGeneration`` (no remote code) with
its processor, loaded from a hub id, a folder, or the offline tiny build (``tiny.CAPTIONER``)
through the same ``from_pretrained`` calls. The first suggestion is the beam-search caption;
the others are sampled from seeds derived from the job's, so the same job gives the same four.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image

from reelbot.catalog import ModelSpec
from reelbot.errors import Cancelled, OutOfMemory, ReelbotError, UserError
from reelbot.generation import load_errors
from reelbot.generation.registry import model_source
from reelbot.jobs import Options, check_prompt_text, parse_prompt

__all__ = ["CAPTION_TASK", "SUGGESTIONS", "Captioner", "clean", "usable"]

log = logging.getLogger(__name__)

CAPTION_TASK = "<MORE_DETAILED_CAPTION>"
"""Florence-2's task token for a paragraph about the image (the processor expands it)."""
SUGGESTIONS = 4
MAX_NEW_TOKENS = 96
MIN_NEW_TOKENS = 4
MAX_CHARS = 400
"""A suggestion is cut at the last sentence end before this, to stay a usable prompt."""
ROUNDS = 3
"""Sampling rounds before giving up on four distinct suggestions."""


def clean(text: str) -> str:
    """A caption as a prompt: no control or replacement characters, one line, whole sentences
    within ``MAX_CHARS``."""
    text = unicodedata.normalize("NFC", text).replace("\ufffd", " ")
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    text = " ".join(text.split())
    # A suggestion is run as a prompt: a word starting with -- or a dash would read as a flag.
    text = " ".join(re.sub(r"^(?:--|—|–)+", "", word) for word in text.split())
    if len(text) > MAX_CHARS:
        cut = text[:MAX_CHARS]
        ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", cut)]
        text = cut[: ends[-1]] if ends else cut.rsplit(" ", 1)[0]
    return text.strip()


def usable(line: str) -> bool:
    """Whether ``line`` runs as an /imagine prompt just as it reads: words to draw (not only
    punctuation), no flags, within the prompt's length."""
    try:
        prompt, options = parse_prompt(line)
        check_prompt_text(prompt)
    except UserError:
        return False
    return bool(prompt) and prompt == line and options == Options()


class _StopWhen(transformers.StoppingCriteria):
    """Ends a ``generate`` call at the next token once the job is cancelled."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        stop = self.cancel is not None and self.cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class Captioner:
    """A loaded Florence-2 model and its processor, on one device."""

    def __init__(self, model: Any, processor: Any, *, device: str, dtype: torch.dtype) -> None:
        """Wrap a loaded model (moved to ``device``) and its processor."""
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, spec: ModelSpec, *, data_dir: Path, device: str, dtype: torch.dtype) -> Captioner:
        """Load ``spec``'s weights and processor; a hub model is cached under ``data_dir``."""
        source, from_hub = model_source(spec, data_dir)
        kwargs: dict[str, Any] = {}
        folder = Path(source)
        if from_hub:
            kwargs["cache_dir"] = str(data_dir / "hub")
            folder = load_errors.hub_folder(data_dir / "hub", source)
        try:
            model = transformers.Florence2ForConditionalGeneration.from_pretrained(
                source, dtype=dtype, **kwargs
            )
            processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)  # type: ignore[no-untyped-call]
        except Exception as exc:
            failure = load_errors.explain(spec, exc, folder=folder)
            if failure is None:
                raise
            raise failure from exc
        return cls(model, processor, device=device, dtype=dtype)

    def suggestions(
        self,
        image: Image.Image,
        *,
        seed: int,
        count: int = SUGGESTIONS,
        cancel: threading.Event | None = None,
        on_round: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """``count`` distinct prompt suggestions for ``image``, the same for the same seed.

        Raises:
            Cancelled: ``cancel`` was set.
            OutOfMemory: the accelerator ran out of memory.
            ReelbotError: the model kept repeating itself (fewer than ``count`` distinct).
        """
        inputs = self.processor(images=image.convert("RGB"), text=CAPTION_TASK, return_tensors="pt")
        inputs = {
            k: v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device)
            for k, v in inputs.items()
        }
        stop = transformers.StoppingCriteriaList([_StopWhen(cancel)])
        found: list[str] = []
        seen: set[str] = set()

        def keep(sequences: torch.Tensor) -> None:
            for text in self.processor.batch_decode(sequences, skip_special_tokens=True):
                line = clean(text)
                key = line.casefold()
                if usable(line) and key not in seen and len(found) < count:
                    seen.add(key)
                    found.append(line)

        # The model's own generation defaults may ask for fewer (the tiny build's do).
        limit = self.model.generation_config.max_new_tokens or MAX_NEW_TOKENS
        common = {
            "max_new_tokens": min(MAX_NEW_TOKENS, limit),
            "min_new_tokens": MIN_NEW_TOKENS,
            "stopping_criteria": stop,
        }
        try:
            with torch.inference_mode():
                keep(self.model.generate(**inputs, num_beams=3, do_sample=False, **common))
                for round_ in range(ROUNDS):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    if on_round is not None:
                        on_round(round_ + 1, ROUNDS)
                    if len(found) >= count:
                        break
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed((seed + round_) % 2**32)
                        sampled = self.model.generate(
                            **inputs,
                            do_sample=True,
                            top_p=0.9,
                            temperature=0.9,
                            num_return_sequences=2 * count,
                            **common,
                        )
                    keep(sampled)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(f"/describe on {self.device}: {str(exc).splitlines()[0]}") from None
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if len(found) < count:
            raise ReelbotError(f"the captioner gave {len(found)} distinct suggestions of {count}")
        return found
