"""Content policy values: prompt normalisation, the blocklist, and the output decision.

Pure functions and frozen models, no Redis and no torch: the queue layer reads each server's
rules (``reelbot.governance.policy``), the worker asks ``decide`` what to do with a scored result.

A prompt is normalised before it is matched, so case, accents, leetspeak, repeated letters
and spacing (``N.u.d-e``, ``n u d e``) do not slip past a word. Words match whole tokens (or
whole runs of tokens, for a phrase); patterns are regular expressions matched against the
normalised text with its repeated letters kept (``normalise(text, squash=False)``).

Patterns run under RE2, not Python's ``re``: any server admin may add one, and every prompt of
every server is checked on the one event loop, so a pattern must take time linear in the text
(``(a+)+$`` backtracks for ever in ``re``). RE2 has no backreferences or lookarounds; a pattern
that needs them is refused when it is added, saying so.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import re2
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Blocklist",
    "OutputMode",
    "Pattern",
    "ServerPolicy",
    "Verdict",
    "check_pattern",
    "decide",
    "normalise",
]

# Digits and symbols read as letters; applied after accents are stripped and case folded.
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s"}
)
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_REPEATS = re.compile(r"(.)\1+")
MAX_PATTERN = 200
"""The longest regular expression a server may add (a bound on what a chat admin can type)."""


def _tokens(text: str, *, squash: bool = True) -> list[str]:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    raw = [t for t in _NOT_WORD.split(folded.translate(_LEET)) if t]
    # A run of single letters is one word spelled out: "n u d e", "n.u.d.e".
    out: list[str] = []
    run: list[str] = []
    for token in [*raw, ""]:
        if len(token) == 1:
            run.append(token)
            continue
        if len(run) > 1:
            out.append("".join(run))
        elif run:
            out.append(run[0])
        run = []
        if token:
            out.append(token)
    # Repeated letters fold to one ("zoooorp"), in the words and the prompt alike.
    return [_REPEATS.sub(r"\1", t) for t in out] if squash else out


def _plain_tokens(text: str) -> set[str]:
    """The tokens as typed (folded), before single letters are joined."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    return {_REPEATS.sub(r"\1", t) for t in _NOT_WORD.split(folded.translate(_LEET)) if t}


def normalise(text: str, *, squash: bool = True) -> str:
    """Fold case, accents, leetspeak, spacing and (``squash``) repeated letters."""
    return " ".join(_tokens(text, squash=squash))


class Pattern(Protocol):
    """A compiled blocklist pattern (an RE2 regular expression)."""

    @property
    def pattern(self) -> str:
        """The pattern as typed."""

    def search(self, text: str) -> object | None:
        """The first match in ``text``, or None."""


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    # A refused pattern is answered to the admin; RE2 need not also print it to stderr.
    options.log_errors = False
    return options


_RE2_OPTIONS = _re2_options()


def check_pattern(pattern: str) -> Pattern:
    """Compile a blocklist pattern under RE2; ``ValueError`` says why one cannot be used."""
    if not pattern or len(pattern) > MAX_PATTERN:
        raise ValueError(f"a pattern is 1 to {MAX_PATTERN} characters")
    try:
        # Compiling (never matching) with re only tells a typo from a feature RE2 lacks.
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    try:
        compiled: Pattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args else ""
        raise ValueError(
            f"/{pattern}/ cannot be used: patterns run under RE2, which never backtracks, so "
            "backreferences, lookarounds and possessive or atomic groups are not available; "
            f"rewrite it without them (RE2: {detail})."
        ) from None
    return compiled


@dataclass(frozen=True)
class Blocklist:
    """Normalised words and phrases, and patterns; ``match`` says which one a prompt hits."""

    phrases: tuple[tuple[str, ...], ...] = ()
    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def build(cls, words: Iterable[str] = (), patterns: Iterable[str] = ()) -> Blocklist:
        """A blocklist from words (or phrases) as typed and regular expressions."""
        phrases = {tuple(_tokens(w)) for w in words}
        return cls(
            phrases=tuple(sorted(p for p in phrases if p)),
            patterns=tuple(check_pattern(p) for p in patterns),
        )

    def __bool__(self) -> bool:
        return bool(self.phrases or self.patterns)

    def match(self, prompt: str) -> str | None:
        """The entry the prompt hits (for the audit log, never the user), or None."""
        tokens = _tokens(prompt)
        # A spelled-out run may take a neighbouring "a" or "i" with it ("a z o r p" is one
        # run), so a single word also matches inside a run of single letters.
        runs = [t for t in tokens if t not in _plain_tokens(prompt)]
        for phrase in self.phrases:
            n = len(phrase)
            if any(tuple(tokens[i : i + n]) == phrase for i in range(len(tokens) - n + 1)):
                return " ".join(phrase)
            if n == 1 and any(phrase[0] in run for run in runs):
                return phrase[0]
        text = normalise(prompt, squash=False)
        for pattern in self.patterns:
            if pattern.search(text):
                return f"/{pattern.pattern}/"
        return None


class OutputMode(StrEnum):
    """What happens to a result the classifier flags."""

    BLOCK = "block"
    """Withheld: the user is told and the credits come back."""
    SPOILER = "spoiler"
    """Posted behind the platform's spoiler (Discord ``SPOILER_``, Telegram ``has_spoiler``)."""
    ALLOW = "allow"
    """Posted as it is."""


class ServerPolicy(BaseModel):
    """One server's own rules, on top of the deployment's; None means "as the deployment"."""

    model_config = ConfigDict(frozen=True)

    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    mode: OutputMode | None = None
    nsfw_mode: OutputMode | None = None
    threshold: float | None = None
    count: int | None = Field(default=None, ge=1, le=4, description="images per command")

    def describe(self) -> str:
        """One line for chat and the command line (patterns and words are admins' to see)."""
        parts = [
            f"mode={self.mode or 'inherit'}",
            f"nsfw-mode={self.nsfw_mode or 'inherit'}",
            f"threshold={'inherit' if self.threshold is None else self.threshold}",
            f"words={len(self.words)}",
            f"patterns={len(self.patterns)}",
        ]
        if self.count is not None:
            parts.append(f"count={self.count}")
        return " ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """The output decision for one result."""

    mode: OutputMode
    flagged: bool
    score: float | None

    @property
    def withheld(self) -> bool:
        """Whether the result is not posted at all."""
        return self.flagged and self.mode is OutputMode.BLOCK

    @property
    def spoiler(self) -> bool:
        """Whether the result is posted behind a spoiler."""
        return self.flagged and self.mode is OutputMode.SPOILER


def decide(
    score: float | None,
    *,
    threshold: float,
    mode: OutputMode,
    nsfw_mode: OutputMode,
    nsfw_channel: bool,
) -> Verdict:
    """What to do with a result of NSFW ``score`` (None: not classified) in this channel."""
    chosen = nsfw_mode if nsfw_channel else mode
    flagged = score is not None and score >= threshold
    return Verdict(mode=chosen, flagged=flagged, score=score)
