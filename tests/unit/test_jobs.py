"""The option grammar: flags, ranges, styles and the errors users see."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelbot.catalog import Catalog, Task, load_catalog
from reelbot.errors import (
    InvalidOption,
    InvalidPrompt,
    MissingImage,
    ReelbotError,
    UnknownModel,
    UserError,
)
from reelbot.jobs import (
    MAX_PROMPT_CHARS,
    Options,
    job_id_for,
    merge_options,
    parse_prompt,
    resolve,
)


@pytest.fixture(scope="module")
def tiny() -> Catalog:
    return load_catalog("tiny")


@pytest.fixture(scope="module")
def default() -> Catalog:
    return load_catalog("default")


def test_flags_are_split_from_the_prompt() -> None:
    prompt, opts = parse_prompt("a red fox in snow --ar 16:9 --seed 42 --no text, watermark")
    assert prompt == "a red fox in snow"
    assert opts == Options(aspect="16:9", seed=42, negative="text, watermark")


def test_words_after_a_one_word_flag_go_back_to_the_prompt() -> None:
    prompt, opts = parse_prompt("--seed 7 a cat in a hat")
    assert prompt == "a cat in a hat"
    assert opts.seed == 7


def test_phone_dashes_count_as_flags() -> None:
    prompt, opts = parse_prompt("a fox —ar 3:2 –steps 4")
    assert prompt == "a fox"
    assert opts.aspect == "3:2" and opts.steps == 4


def test_hyphens_inside_words_are_not_flags() -> None:
    prompt, _ = parse_prompt("a well-lit room, state-of-the-art")
    assert prompt == "a well-lit room, state-of-the-art"


def test_unknown_flag_suggests_the_close_one() -> None:
    with pytest.raises(InvalidOption) as err:
        parse_prompt("a fox --sed 4")
    assert "--sed" in err.value.user_message
    assert "Did you mean --seed?" in err.value.user_message


def test_flag_given_twice_is_an_error() -> None:
    with pytest.raises(InvalidOption, match="twice"):
        parse_prompt("a fox --seed 1 --seed 2")


def test_flag_without_value_shows_an_example() -> None:
    with pytest.raises(InvalidOption, match="--seed 42"):
        parse_prompt("a fox --seed")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a fox --steps 99", "--steps 99 is out of range for tiny-zimage: use 1 to 8"),
        ("a fox --guidance 50", "--guidance 50.0 is out of range"),
        ("a fox --seed 99999999999", "--seed 99999999999 is out of range"),
        ("a fox --ar 10:1", "use ratios from 1:4 to 4:1"),
        ("a fox --ar wide", "--ar must look like 16:9"),
        ("a fox --steps 1e9", "--steps must be a whole number"),
        ("a fox --guidance nan", "--guidance must be a number"),
        ("a fox --fps 12", "--fps only applies to /video and /animate"),
        ("a fox --strength 0.5", "--strength only applies to /remix"),
        ("a fox --style vaporwave", "Unknown style 'vaporwave'"),
    ],
)
def test_out_of_range_values_name_the_option_and_range(
    tiny: Catalog, text: str, needle: str
) -> None:
    with pytest.raises(InvalidOption) as err:
        resolve(Task.IMAGINE, text, tiny)
    assert needle in err.value.user_message


def test_video_ranges_come_from_the_model(tiny: Catalog) -> None:
    with pytest.raises(InvalidOption, match=r"--duration 60.0 is out of range for tiny-wan"):
        resolve(Task.VIDEO, "waves --duration 60", tiny)
    with pytest.raises(InvalidOption, match=r"--fps 60 is out of range for tiny-wan: use 4 to 24"):
        resolve(Task.VIDEO, "waves --fps 60", tiny)


def test_duration_becomes_a_valid_frame_count(tiny: Catalog) -> None:
    params = resolve(Task.VIDEO, "waves --duration 2 --fps 8", tiny)
    assert params.frames == 17
    assert (params.frames - 1) % 4 == 0


def test_defaults_and_reproducible_summary(tiny: Catalog) -> None:
    params = resolve(Task.IMAGINE, "a fox", tiny, default_seed=1234)
    assert (params.model, params.seed, params.steps) == ("tiny-zimage", 1234, 2)
    again = resolve(Task.IMAGINE, f"{params.prompt} {params.summary()}", tiny)
    assert again.model_dump(exclude={"cost", "aspect"}) == params.model_dump(
        exclude={"cost", "aspect"}
    )


def test_summary_shows_the_ratio_asked_for_and_reproduces_the_size(tiny: Catalog) -> None:
    params = resolve(Task.IMAGINE, "a fox --ar 16x9 --seed 3", tiny)
    assert "--ar 16:9" in params.summary()
    again = resolve(Task.IMAGINE, f"a fox {params.summary()}", tiny)
    assert (again.width, again.height) == (params.width, params.height)


def test_aspect_keeps_the_pixel_area_and_the_multiple(default: Catalog) -> None:
    params = resolve(Task.IMAGINE, "a fox --ar 16:9", default)
    assert params.width % 16 == 0 and params.height % 16 == 0
    assert params.width > params.height
    assert abs(params.width * params.height - 1024 * 1024) / (1024 * 1024) < 0.05


def test_style_applies_template_negative_and_strength(tiny: Catalog) -> None:
    params = resolve(Task.REMIX, "a fox --style watercolor", tiny, has_image=True)
    assert params.prompt == "watercolor painting of a fox, soft washes, paper texture"
    assert "3d render" in params.negative_prompt
    assert params.strength == 0.7
    explicit = resolve(Task.REMIX, "a fox --style watercolor --strength 0.3", tiny, has_image=True)
    assert explicit.strength == 0.3


def test_remix_needs_an_image(tiny: Catalog) -> None:
    with pytest.raises(MissingImage, match="attach one"):
        resolve(Task.REMIX, "a fox", tiny)


def test_animate_prompt_is_optional_but_imagine_is_not(tiny: Catalog) -> None:
    assert resolve(Task.ANIMATE, "", tiny, has_image=True).prompt == ""
    with pytest.raises(InvalidPrompt, match="needs a prompt"):
        resolve(Task.IMAGINE, "   ", tiny)


def test_over_long_prompt_is_refused(tiny: Catalog) -> None:
    with pytest.raises(InvalidPrompt, match=str(MAX_PROMPT_CHARS)):
        resolve(Task.IMAGINE, "a" * (MAX_PROMPT_CHARS + 1), tiny)
    with pytest.raises(InvalidPrompt):
        resolve(Task.IMAGINE, "fox " * 50_000, tiny)


def test_model_must_serve_the_task(tiny: Catalog) -> None:
    with pytest.raises(UnknownModel, match="does not do /video"):
        resolve(Task.VIDEO, "waves --model tiny-zimage", tiny)
    with pytest.raises(UnknownModel, match="Available"):
        resolve(Task.IMAGINE, "a fox --model nope", tiny)


def test_negative_prompt_refused_where_the_model_ignores_it(tiny: Catalog) -> None:
    with pytest.raises(InvalidOption, match="does not use a negative prompt"):
        resolve(Task.IMAGINE, "a fox --model tiny-flux2 --no text", tiny)


def test_explicit_options_merge_and_conflicts_are_errors(tiny: Catalog) -> None:
    params = resolve(Task.IMAGINE, "a fox --seed 5", tiny, explicit=Options(steps=3))
    assert (params.seed, params.steps) == (5, 3)
    with pytest.raises(InvalidOption, match="set twice"):
        resolve(Task.IMAGINE, "a fox --seed 5", tiny, explicit=Options(seed=6))


def test_an_answer_quotes_at_most_the_start_of_a_value_of_any_length(tiny: Catalog) -> None:
    # Found by fuzzing Discord: a 12 000-character model name made an answer over Discord's
    # 2000 characters, so the user got none.
    long = "a fox " * 2000
    for run in (
        lambda: resolve(Task.IMAGINE, "a fox", tiny, explicit=Options(model=long)),
        lambda: resolve(Task.VIDEO, "a fox", tiny, explicit=Options(model=long)),
        lambda: tiny.upscaler(long),
        lambda: merge_options(Options(negative=long), Options(negative="x")),
    ):
        with pytest.raises((UnknownModel, InvalidOption)) as refused:
            run()
        assert "a fox a fox" in str(refused.value) and len(str(refused.value)) < 400
    with pytest.raises(UnknownModel, match="does not do /video"):
        resolve(Task.VIDEO, "a fox", tiny, explicit=Options(model="tiny-zimage"))


def test_control_characters_are_cleaned() -> None:
    prompt, _ = parse_prompt("a\x00fox\u200b\nin\tsnow")
    assert prompt == "a fox in snow"


def test_job_id_is_stable_per_platform_id() -> None:
    assert job_id_for("discord", "123") == job_id_for("discord", "123")
    assert job_id_for("discord", "123") != job_id_for("telegram", "123")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    "--ar",
                    "--seed",
                    "--no",
                    "--steps",
                    "--guidance",
                    "--model",
                    "--strength",
                    "--duration",
                    "--fps",
                    "--style",
                    "—ar",
                    "--",
                    "--x",
                    "16:9",
                    "0",
                    "-1",
                    "4.5",
                    "1e400",
                    "nan",
                    "tiny-wan",
                    "anime",
                    "fox",
                    "\x00",
                    "🦊",
                    "9999999999999",
                ]
            ),
            max_size=12,
        ).map(" ".join),
    ),
    task=st.sampled_from(list(Task)),
    has_image=st.booleans(),
)
def test_any_input_gives_a_request_or_a_user_error(
    tiny: Catalog, text: str, task: Task, has_image: bool
) -> None:
    try:
        params = resolve(task, text, tiny, has_image=has_image)
    except UserError as exc:
        assert exc.user_message.strip()
        return
    except ReelbotError as exc:  # pragma: no cover - a failure message, not a path
        pytest.fail(f"non-user error {exc!r}")
    assert params.steps >= 1
    assert params.width % 16 == 0 and params.height % 16 == 0
