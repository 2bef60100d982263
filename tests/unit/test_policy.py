"""Prompt normalisation, the blocklist, the output decision and ``/admin policy`` edits."""

from __future__ import annotations

import pytest

from reelbot.config import Settings
from reelbot.content import Blocklist, OutputMode, ServerPolicy, decide, normalise
from reelbot.errors import ContentRefused, InvalidOption
from reelbot.governance.policy import edit

# Stand-in words: the tests need words to block, not real ones.
WORDS = ["forbidden", "red panda", "zorp"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FORBIDDEN Fruit", "forbiden fruit"),
        # Repeated letters fold to one, in the words and the prompt alike.
        ("fórbíddén", "forbiden"),
        ("f0rb1dd3n", "forbiden"),
        ("f o r b i d d e n", "forbiden"),
        ("f.o.r.b.i.d.d.e.n!", "forbiden"),
        ("forbiiiiddddden", "forbiden"),
        ("z-o-r-p", "zorp"),
        ("  a   cat,on\ta mat ", "a cat on a mat"),
        ("ｚｏｒｐ", "zorp"),
    ],
)
def test_normalise_folds_case_accents_leet_repeats_and_spacing(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "a FORBIDDEN garden",
        "a f0rb1dd3n garden",
        "F O R B I D D E N",
        "fórbíddén",
        "a Red   Panda on a tree",
        "red-panda",
        "zoooorp!",
        "forrbidddden",
        "z.o.r.p at dawn",
    ],
)
def test_blocked_words_match_whatever_the_spelling(prompt: str) -> None:
    assert Blocklist.build(WORDS).match(prompt) is not None


@pytest.mark.parametrize(
    "prompt",
    ["a red fox", "forbiddance", "a panda that is red", "zorpy", "unforbidden", "3d render, 4k"],
)
def test_whole_words_only(prompt: str) -> None:
    assert Blocklist.build(WORDS).match(prompt) is None


def test_patterns_match_the_normalised_text() -> None:
    blocklist = Blocklist.build(patterns=[r"\bgr[ae]y ?goo\b"])
    assert blocklist.match("GR3Y GOO everywhere") == r"/\bgr[ae]y ?goo\b/"
    assert blocklist.match("a grey good dog") is None
    assert not Blocklist.build()


def test_a_bad_pattern_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings(blocked_patterns=["(unclosed"])


@pytest.mark.parametrize("pattern", [r"(zo)\1rp", r"zorp(?=x)", r"(?<!a)zorp"])
def test_a_pattern_re2_cannot_run_is_refused_saying_why(pattern: str) -> None:
    # Python's re would take these, and backtrack; server patterns run under RE2, which does not.
    with pytest.raises(InvalidOption) as caught:
        edit(ServerPolicy(), "pattern", [pattern])
    said = caught.value.user_message
    assert caught.value.option == "pattern" and f"/{pattern}/" in said
    assert "backreferences" in said and "lookarounds" in said and "rewrite it" in said, said
    with pytest.raises(ValueError, match="backreferences"):
        Settings(blocked_patterns=[pattern])


def test_settings_words_split_on_commas() -> None:
    assert Settings(blocked_words="zorp, red panda").blocked_words == ("zorp", "red panda")


def test_refusal_message_does_not_name_the_word() -> None:
    message = ContentRefused().user_message
    assert "refused" in message
    assert not any(w in message for w in WORDS)


@pytest.mark.parametrize(
    ("score", "mode", "nsfw_channel", "withheld", "spoiler"),
    [
        (0.95, OutputMode.BLOCK, False, True, False),
        (0.95, OutputMode.SPOILER, False, False, True),
        (0.95, OutputMode.ALLOW, False, False, False),
        (0.10, OutputMode.BLOCK, False, False, False),
        (0.10, OutputMode.SPOILER, False, False, False),
        (None, OutputMode.BLOCK, False, False, False),
        # In an NSFW channel the nsfw mode applies (allow here), whatever the other mode says.
        (0.95, OutputMode.BLOCK, True, False, False),
    ],
)
def test_decide(
    score: float | None, mode: OutputMode, nsfw_channel: bool, withheld: bool, spoiler: bool
) -> None:
    verdict = decide(
        score, threshold=0.8, mode=mode, nsfw_mode=OutputMode.ALLOW, nsfw_channel=nsfw_channel
    )
    assert (verdict.withheld, verdict.spoiler) == (withheld, spoiler)


def test_the_threshold_is_inclusive() -> None:
    at = decide(
        0.8, threshold=0.8, mode=OutputMode.BLOCK, nsfw_mode=OutputMode.BLOCK, nsfw_channel=False
    )
    assert at.withheld


def test_defaults_block_outside_nsfw_channels_and_allow_inside() -> None:
    settings = Settings()
    assert settings.output_policy is OutputMode.BLOCK
    assert settings.nsfw_channel_policy is OutputMode.ALLOW


def test_admin_edits() -> None:
    policy = edit(ServerPolicy(), "mode", ["SPOILER"])
    policy = edit(policy, "threshold", ["0.5"])
    policy = edit(policy, "block", ["Red", "Panda"])
    policy = edit(policy, "pattern", [r"zo+rp"])
    assert policy == ServerPolicy(
        words=("red panda",), patterns=(r"zo+rp",), mode=OutputMode.SPOILER, threshold=0.5
    )
    assert "mode=spoiler" in policy.describe() and "words=1" in policy.describe()
    policy = edit(policy, "unblock", ["red", "panda"])
    policy = edit(policy, "mode", ["inherit"])
    assert policy.words == () and policy.mode is None


@pytest.mark.parametrize(
    ("action", "args", "option"),
    [
        ("mode", ["maybe"], "mode"),
        ("threshold", ["1.5"], "threshold"),
        ("threshold", ["high"], "threshold"),
        ("pattern", ["(x"], "pattern"),
        ("unblock", ["never-added"], "word"),
        ("block", [], "block"),
        ("explode", ["x"], "action"),
    ],
)
def test_admin_edit_errors(action: str, args: list[str], option: str) -> None:
    with pytest.raises(InvalidOption) as caught:
        edit(ServerPolicy(), action, args)
    assert caught.value.option == option


def test_a_spelled_out_word_next_to_a_one_letter_word() -> None:
    assert Blocklist.build(WORDS).match("a z o r p in i f o r b i d d e n") == "forbiden"
    assert Blocklist.build(["zorp"]).match("a z.o.r.p") == "zorp"
