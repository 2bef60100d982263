"""Hostile input: odd commands and attachments get a clear answer, never a crash or a blow-up.

In process: the inputs module against a corpus of hostile files (truncated, polyglots,
decompression bombs, wrong types, animations) and hypothesis-mutated images, with memory
bounded; the command parsers and the caption renderers against hypothesis text. Through the
emulators: hostile prompts and attachments on Discord and Telegram, and a 100 MB upload to the
web chat.
"""

from __future__ import annotations

import asyncio
import html
import io
import re
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reelbot.bots.telegram.parse import parse_command
from reelbot.bots.telegram.render import CAPTION_LIMIT, caption_html, utf16_len
from reelbot.catalog import Catalog, Task, load_catalog
from reelbot.errors import InvalidImage, InvalidPrompt, ReelbotError
from reelbot.inputs import DEFAULT_MAX_PIXELS, load_input_image, probe_image
from reelbot.jobs import GenerationParams, check_prompt_text
from reliability.hostile import HOSTILE_TEXT, assert_no_pings
from reliability.stacks import Chat, Interaction, Platforms, User, both_platforms

MEMORY_PEAK_MB = 64.0
"""Python-side peak while checking one hostile file: far below a decoded bomb."""
WEBP_PEAK_MB = 4 * DEFAULT_MAX_PIXELS / 1e6 * 1.1
"""libwebp has no reduced-size decode and hands Pillow the RGBA pixels as one Python buffer: a
WEBP within the pixel limit costs up to 4 bytes a pixel, bounded by that limit, never more."""


# -- the hostile files -----------------------------------------------------------------------------


def _png(width: int = 32, height: int = 24, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), "orange").save(buf, "PNG")
    return buf.getvalue()


def _jpeg(width: int = 32, height: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buf, "JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, rows: int = 1) -> bytes:
    """A valid PNG stream whose IHDR claims ``width``x``height``: a few KB on the wire."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw = zlib.compress(b"\x00" * (min(width, 1 << 16) + 1) * rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to claim ``width``x``height``."""
    data = bytearray(_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _webp_bomb() -> bytes:
    """A lossless WEBP of 6000x6000 (36 MP) in a few KB: one colour compresses to nothing."""
    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 7).save(buf, "WEBP", lossless=True, quality=0, method=0)
    return buf.getvalue()


def _png_zip_polyglot() -> bytes:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("evil.sh", "#!/bin/sh\necho pwned\n")
    return _png() + zipped.getvalue()


def _gif_js_polyglot() -> bytes:
    """GIF89a whose logical screen width bytes read ``/*`` so the file also parses as JS."""
    buf = io.BytesIO()
    Image.new("P", (8, 8), 1).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:8] = b"/*"
    return bytes(data) + b"*/=1;alert(document.domain);"


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    return buf.getvalue()


REFUSED = "refused"
ACCEPTED = "accepted"
EITHER = "either"

CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", REFUSED),
    "png truncated in IHDR": (lambda: _png()[:20], REFUSED),
    "png truncated in IDAT": (lambda: _png(256, 256, "RGBA")[:-40], REFUSED),
    "jpeg truncated": (lambda: _jpeg(256, 256)[:300], REFUSED),
    "png with huge IHDR (100k x 100k)": (lambda: _png_claiming(100_000, 100_000), REFUSED),
    "png just over the pixel limit": (lambda: _png_claiming(8000, 6000), REFUSED),
    "png zero width": (lambda: _png_claiming(0, 10), REFUSED),
    "jpeg claiming 60000x60000": (lambda: _jpeg_claiming(60_000, 60_000), REFUSED),
    # libjpeg pads a short scan with grey and Pillow accepts it; decoded at 1/8 scale, cheaply.
    "jpeg claiming 6000x6000, tiny body": (lambda: _jpeg_claiming(6000, 6000), EITHER),
    "webp 6000x6000 in a few KB": (_webp_bomb, ACCEPTED),
    "png + zip polyglot": (_png_zip_polyglot, ACCEPTED),
    "gif/js polyglot": (_gif_js_polyglot, EITHER),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>', REFUSED),
    "html": (lambda: b"<!doctype html><script>alert(1)</script>", REFUSED),
    "pdf": (lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", REFUSED),
    "mp4": (lambda: b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\0" * 64, REFUSED),
    "zip": (lambda: b"PK\x03\x04" + b"\0" * 100, REFUSED),
    "tiff (not an allowed format)": (_tiff, REFUSED),
    "random bytes": (lambda: bytes(range(256)) * 40, REFUSED),
    "animated gif": (lambda: _animated("GIF"), ACCEPTED),
    "animated png": (lambda: _animated("PNG"), ACCEPTED),
    "animated webp": (lambda: _animated("WEBP"), ACCEPTED),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_file_gets_a_clear_answer_in_bounded_memory(name: str) -> None:
    make, expected = CORPUS[name]
    data = make()
    tracemalloc.start()
    try:
        outcomes = []
        for check in (probe_image, load_input_image):
            try:
                result = check(data)
            except InvalidImage as exc:
                # A sentence for the user that says what to send instead.
                assert exc.user_message.endswith(".") and len(exc.user_message) > 30, exc
                assert "Traceback" not in exc.user_message
                outcomes.append(REFUSED)
            else:
                if isinstance(result, Image.Image):
                    assert result.mode == "RGB" and max(result.size) <= 2048
                outcomes.append(ACCEPTED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = WEBP_PEAK_MB if name.startswith("webp") else MEMORY_PEAK_MB
    assert peak < bound * 1024 * 1024, f"{name}: peak {peak / 1e6:.0f} MB"
    final = outcomes[-1]  # the worker's decode; the header probe may pass a truncated body
    if expected != EITHER:
        assert final == expected, (name, outcomes)
    if outcomes[0] == REFUSED:
        assert final == REFUSED, (name, outcomes)


def test_a_100_mb_file_is_refused_from_its_size() -> None:
    data = bytes(100 * 1024 * 1024)
    with pytest.raises(InvalidImage, match="over the 20 MB limit"):
        probe_image(data)


SEEDS = [_png(40, 30), _jpeg(40, 30), _animated("GIF"), _animated("WEBP")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    tail=st.binary(max_size=64),
)
def test_mutated_images_decode_or_are_refused(
    seed: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    data = bytearray(seed)
    for offset, value in edits:
        data[offset % len(data)] = value
    blob = bytes(data[:cut] if cut is not None else data) + tail
    try:
        image = load_input_image(blob)
    except InvalidImage as exc:
        assert exc.user_message
    else:
        assert image.mode == "RGB" and max(image.size) <= 2048


# -- commands and captions -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=HOSTILE_TEXT, name=st.sampled_from(["imagine", "video", "cancel", "x" * 40]))
def test_telegram_parsing_never_crashes(text: str, name: str) -> None:
    command = parse_command(f"/{name}@emu_bot {text}", "emu_bot")
    if command is not None:
        assert command.name == name.lower()
        try:
            check_prompt_text(command.args)
        except InvalidPrompt as exc:
            assert exc.user_message
    assert parse_command(f"/{name}@other_bot {text}", "emu_bot") is None


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


TINY: Catalog = load_catalog("tiny")


@settings(max_examples=150, deadline=None)
@given(prompt=HOSTILE_TEXT | st.text(min_size=2000, max_size=4000), who=HOSTILE_TEXT)
def test_telegram_caption_escapes_everything(prompt: str, who: str) -> None:
    params = GenerationParams(
        task=Task.IMAGINE,
        model="tiny-zimage",
        prompt=prompt,
        seed=1,
        width=64,
        height=64,
        steps=2,
        guidance=1.0,
    )
    caption = caption_html(params, requested_by=who or None)
    parser = _Tags()
    parser.feed(caption)
    parser.close()
    # Only the renderer's own tags survive; the user's text comes back as text.
    assert set(parser.tags) <= {"b", "code"}, parser.tags
    visible = "".join(parser.text)
    assert utf16_len(visible) <= CAPTION_LIMIT + 16
    assert html.unescape(re.sub(r"<[^>]*>", "", caption)) == visible


# -- through the emulators -------------------------------------------------------------------------

PROMPTS = [
    "@everyone @here <@&987654321098765432> **look** <b>x</b>",
    "<a href='javascript:alert(1)'>click</a> &amp; </code></b> fox",
    "control \x00\x07\x1b[31m chars \u202e and zero \u200b width fox",
    "fox --seed 99999999999999999999999999999 --steps 1e309 --ar 1:0",
    "fox --duration nan --steps -5 --no",
    "🦊" * 50,
    "a fox " * 17_000,  # about 100 KB
]


@pytest.fixture
async def up(
    tmp_path: Path, tiny_catalog: Catalog, tiny_data_dir: Path, runner: Any
) -> AsyncIterator[Platforms]:
    runner.preload("tiny-zimage")
    async with both_platforms(tmp_path, tiny_catalog, tiny_data_dir, runner, workers=1) as p:
        yield p


def _answered_discord(up: Platforms, inter: Interaction) -> str:
    """What the user saw: the ephemeral refusal, a failure text or the result's caption."""
    emu = up.discord
    if inter.response_type == 4:
        return str((emu.original(inter) or {}).get("content", ""))
    for message in emu.followups(inter):
        if message["attachments"] or message["content"]:
            return str(message["content"])
    return ""


def _tg_replies(up: Platforms, update: dict[str, Any]) -> list[dict[str, Any]]:
    message = update["message"]
    return [
        m
        for m in up.telegram.bot_messages(message["chat"]["id"])
        if m.get("reply_to_message", {}).get("message_id") == message["message_id"]
    ]


def _tg_settled(up: Platforms, update: dict[str, Any]) -> bool:
    """A result was posted, or the one reply says the job is over (refused, failed)."""
    replies = _tg_replies(up, update)
    if any({"photo", "document", "video"} & m.keys() for m in replies):
        return True
    texts = [m.get("text", "") for m in replies]
    return any(t and not t.startswith(("⏳", "🎨", "🎞️", "📤")) for t in texts)


class _CountingCdn(dict[str, Any]):
    """The Discord emulator's CDN, noting every file the bot downloads."""

    def __init__(self, files: dict[str, Any]) -> None:
        super().__init__(files)
        self.fetched: list[str] = []

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.fetched.append(name)
        return super().get(name, default)


@pytest.mark.timeout(240)
async def test_hostile_commands_and_attachments_on_both_platforms(up: Platforms) -> None:
    demu, temu = up.discord, up.telegram
    cdn = _CountingCdn(demu.cdn)
    demu.cdn = cdn
    fetched = cdn.fetched

    inters: list[Interaction] = []
    for i, prompt in enumerate(PROMPTS):
        inters.append(
            await demu.slash("imagine", {"prompt": prompt}, user_id=str(400000000000000000 + i))
        )
    huge = demu.add_attachment("huge.png", _png())
    huge["size"] = 100 * 1024 * 1024  # declared 100 MB: refused before any download
    attach = {
        "huge": huge,
        "html": demu.add_attachment("page.html", b"<script>1</script>", "text/html"),
        "bomb": demu.add_attachment("bomb.png", _png_claiming(100_000, 100_000)),
        "truncated": demu.add_attachment("cut.png", _png(256, 256, "RGBA")[:-40]),
        "polyglot": demu.add_attachment("gif.gif", _gif_js_polyglot(), "image/gif"),
    }
    att_inters = {
        name: await demu.slash(
            "remix", {"prompt": "winter"}, attachments={"image": att}, user_id=str(5000 + n)
        )
        for n, (name, att) in enumerate(attach.items())
    }

    updates: list[tuple[dict[str, Any], float]] = []
    loop = asyncio.get_running_loop()
    for i, prompt in enumerate(PROMPTS):
        user = User(7000 + i, f"U{i}", f"u{i}")
        sent = loop.time()
        updates.append((temu.user_text(temu.private_chat(user), user, f"/imagine {prompt}"), sent))
    docs: dict[str, dict[str, Any]] = {}
    doc_cases = [
        ("huge", _png(), "image/png", 100 * 1024 * 1024),
        ("zip", b"PK\x03\x04" + b"\0" * 64, "application/zip", None),
        ("bomb", _png_claiming(100_000, 100_000), "image/png", None),
        ("truncated", _png(256, 256, "RGBA")[:-40], "image/png", None),
        ("animated", _animated("GIF"), "image/gif", None),
    ]
    for n, (name, data, mime, size) in enumerate(doc_cases):
        user = User(8000 + n, f"D{n}", f"d{n}")
        chat: Chat = temu.private_chat(user)
        docs[name] = temu.user_document(
            chat,
            user,
            data,
            file_name=f"{name}.bin",
            mime_type=mime,
            caption="/remix winter",
            reported_size=size,
        )

    everything = [*inters, *att_inters.values()]
    await demu.wait_for(lambda: all(_answered_discord(up, i) for i in everything), within=180)
    await temu.wait_for(
        lambda: (
            all(_tg_settled(up, u) for u, _ in updates)
            and all(_tg_settled(up, d) for d in docs.values())
        ),
        within=180,
        what="every Telegram command answered",
    )

    # Discord: acknowledged in time, nothing pings, refusals are explained.
    for inter in everything:
        assert inter.responded_at is not None
        assert inter.responded_at - inter.created_at < 3.0
    assert demu.violations == []
    assert_no_pings(demu.calls)
    for name in ("huge", "html"):
        inter = att_inters[name]
        assert inter.response_type == 4 and inter.ephemeral, name
    assert not [f for f in fetched if f.endswith(("_huge.png", "_page.html"))], fetched
    for name in ("bomb", "truncated"):
        assert _answered_discord(up, att_inters[name]), name

    # Telegram: a status at once, captions escaped, declared-huge files never downloaded.
    for update, sent in updates:
        chat_id = update["message"]["chat"]["id"]
        first = temu.calls_of("sendMessage", chat_id)
        assert first and first[0].at - sent < 1.0
    for call in temu.calls:
        if call.status == 400:
            raise AssertionError(f"{call.method} refused by Telegram: {call.error}")
        if call.params.get("parse_mode", "").upper() == "HTML":
            parser = _Tags()
            parser.feed(str(call.params.get("caption") or call.params.get("text") or ""))
            assert set(parser.tags) <= {"b", "code", "i", "a"}, (call.method, parser.tags)
            assert "javascript:" not in " ".join(parser.tags)
    downloads = {str(c.params.get("file_id")) for c in temu.calls_of("getFile")}
    huge_doc = docs["huge"]["message"]["document"]["file_id"]
    assert huge_doc not in downloads
    for name in ("huge", "zip", "bomb", "truncated"):
        replies = _tg_replies(up, docs[name])
        assert not any({"photo", "video"} & m.keys() for m in replies), name
        assert any(m.get("text") for m in replies), name


# -- the web chat ----------------------------------------------------------------------------------


async def test_a_100_mb_upload_to_the_web_chat_is_refused_in_bounded_memory(
    tmp_path: Path,
) -> None:
    from reelbot.bots.web.app import build_app
    from reelbot.bots.web.chat import WebChat
    from reelbot.config import Settings
    from reelbot.runtime.http import Hub
    from reelbot.store.connection import connect

    url = "redis://127.0.0.1:9/0"  # nothing listens: a request that gets through fails fast
    settings_ = Settings(redis_url=url, models="tiny", data_dir=tmp_path)
    chat = WebChat(connect(url, retries=0), settings_, TINY)
    app = build_app(chat, Hub(), token=None, loopback=True)
    boundary = "reelbotboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="msg"\r\n\r\nm0000001\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"'
        "\r\nContent-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = 100 * 1024 * 1024
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        chunk = b"\0" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            sent += len(chunk)
            yield chunk
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
        "X-Reelbot-Client": "c" * 12,
    }
    tracemalloc.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            response = await client.post("/api/command", content=body(), headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413, response.text
    assert sent < size // 2, f"{sent / 1e6:.0f} MB of the body were read"
    assert "20 MB" in response.json()["message"]
    assert peak < MEMORY_PEAK_MB * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_errors_are_reelbot_errors() -> None:
    # The corpus's refusals are the class the adapters turn into user-facing replies.
    assert issubclass(InvalidImage, ReelbotError)
