"""Edit region links: signed grants that open until they expire, and nothing else ever does."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelbot.chat.edit_links import LINK_TTL_S, Grant, sign, verify
from reelbot.config import Settings
from reelbot.errors import LinkRefused, UserError
from reelbot.jobs import ReplyAddress

KEY = b"k" * 32
NOW = 1_800_000_000.0


def _grant(**changes: object) -> Grant:
    values: dict[str, object] = {
        "id": "abc123",
        "platform": "discord",
        "job_id": "j" * 20,
        "user_id": "111",
        "server_id": "999",
        "role_ids": ("5", "6"),
        "display_name": "Ålice 🦊",
        "reply": ReplyAddress(platform="discord", channel_id="42", extra={"max_bytes": "9"}),
        "expires_at": NOW + LINK_TTL_S,
    }
    return Grant.model_validate(values | changes)


def test_a_signed_grant_opens_as_it_was_made_until_it_expires() -> None:
    grant = _grant()
    token = sign(KEY, grant)
    assert verify(KEY, token, now=NOW) == grant
    assert verify(KEY, token, now=NOW + LINK_TTL_S - 1) == grant
    with pytest.raises(LinkRefused, match="expired; press Edit region again") as expired:
        verify(KEY, token, now=NOW + LINK_TTL_S)
    assert expired.value.reason == "expired"
    with pytest.raises(LinkRefused) as other_key:
        verify(b"x" * 32, token, now=NOW)
    assert other_key.value.reason == "invalid"


def _flip(text: str, at: int) -> str:
    """``text`` (base64url) with one byte of what it encodes changed."""
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("part", [0, 1])
def test_one_flipped_byte_of_payload_or_signature_is_refused(part: int) -> None:
    token = sign(KEY, _grant())
    parts = token.split(".")
    for at in (0, 7, -1):
        forged = parts.copy()
        forged[part] = _flip(parts[part], at)
        with pytest.raises(LinkRefused, match="not valid") as refused:
            verify(KEY, ".".join(forged), now=NOW)
        assert refused.value.reason == "invalid"


def test_a_longer_grant_signed_by_someone_else_is_refused() -> None:
    # Another user id, re-encoded with the old signature: the signature covers every byte.
    token = sign(KEY, _grant())
    mine = sign(KEY, _grant(user_id="222")).split(".")[0]
    with pytest.raises(LinkRefused):
        verify(KEY, f"{mine}.{token.split('.')[1]}", now=NOW)
    assert issubclass(LinkRefused, UserError)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.text(alphabet="ABCDEFabcdef0123456789-_.=", max_size=300),
        st.builds(lambda a, b: f"{a}.{b}", st.text(max_size=80), st.text(max_size=80)),
    )
)
def test_random_tokens_are_only_ever_refused(token: str) -> None:
    with pytest.raises(LinkRefused):
        verify(KEY, token, now=NOW)


def test_the_public_url_is_an_address_to_open() -> None:
    public = Settings(public_url="https://reelbot.example.com/")
    assert public.public_url == "https://reelbot.example.com"  # no trailing slash
    assert Settings().public_url is None
    with pytest.raises(ValueError, match="use the address people open"):
        Settings(public_url="reelbot.example.com")
    assert Settings(public_url="", edit_link_key="").edit_link_key is None  # compose's ${X:-}
    with pytest.raises(ValueError, match="at least 16 random characters"):
        Settings(edit_link_key="short")
