"""A local Telegram Bot API emulator: an aiohttp server that python-telegram-bot talks to.

Serves ``/bot<token>/<method>`` and ``/file/bot<token>/<path>`` on 127.0.0.1 with the JSON
shapes of the real Bot API (PTB parses them into objects), keeps chats, messages and uploaded
files, hands out updates the test injects through ``getUpdates`` long polling, records every
call with its time, and can answer the next N calls of any method with an error (a 5xx,
a 4xx, or a 429 with ``retry_after``) in the Bot API's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from aiohttp import BodyPartReader, ClientSession, ClientTimeout, web
from PIL import Image

BOT_ID = 7000001
BOT_USERNAME = "emu_bot"
TOKEN = f"{BOT_ID}:AAEmulatorTokenForTestsOnly_0123456789"

PHOTO_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
DOWNLOAD_MAX_BYTES = 20 * 1024 * 1024
CAPTION_MAX = 1024
TEXT_MAX = 4096
CALLBACK_DATA_MAX = 64
LONG_POLL_MAX_S = 50.0

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_TAG_RE = re.compile(r"<[^>]+>")
_ERROR_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
"""What the Bot API says with each status when the test gives no description."""


class ApiError(Exception):
    """An error answer of the Bot API: ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    """One Bot API call as the emulator saw it."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    at: float
    """``time.monotonic()`` when the request arrived."""
    status: int = 200
    result: Any = None
    error: str | None = None


@dataclass
class StoredFile:
    """A file the emulator holds: uploaded by the bot or attached to an injected message."""

    file_id: str
    unique_id: str
    data: bytes
    path: str


@dataclass
class User:
    """A Telegram user the test plays."""

    id: int
    first_name: str
    username: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``User`` object of the Bot API."""
        out: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        out["language_code"] = "en"
        return out


@dataclass
class Chat:
    """A private chat or a (super)group."""

    id: int
    type: str
    title: str | None = None
    user: User | None = None
    admins: set[int] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        """The ``Chat`` object of the Bot API."""
        if self.type == "private":
            assert self.user is not None
            out: dict[str, Any] = {"id": self.id, "first_name": self.user.first_name}
            if self.user.username:
                out["username"] = self.user.username
            out["type"] = "private"
            return out
        return {"id": self.id, "title": self.title or "Group", "type": self.type}


def _utf16_len(text: str) -> int:
    """Telegram counts message and caption lengths in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _visible(text: str, parse_mode: str | None) -> str:
    """The text as users see it: tags stripped and entities decoded for HTML."""
    if parse_mode and parse_mode.upper() == "HTML":
        return html.unescape(_TAG_RE.sub("", text))
    return text


def _command_entities(text: str) -> list[dict[str, Any]]:
    """A ``bot_command`` entity for a leading ``/command[@bot]``, as Telegram adds."""
    match = re.match(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]{3,32})?", text)
    if match is None:
        return []
    return [{"offset": 0, "length": _utf16_len(match.group(0)), "type": "bot_command"}]


class TelegramEmulator:
    """The Bot API server. ``async with TelegramEmulator() as emu:`` starts it on a free port."""

    def __init__(
        self, *, token: str = TOKEN, username: str = BOT_USERNAME, group_per_minute: int = 0
    ) -> None:
        self.token = token
        self.group_per_minute = group_per_minute
        """Telegram's FAQ: a bot sends at most 20 messages a minute to one group; above that,
        429 with ``retry_after``. 0: no limit (the default, so other tests keep their pace)."""
        self._group_sends: dict[int, list[float]] = {}
        self.bot = {
            "id": int(token.split(":")[0]),
            "is_bot": True,
            "first_name": "Emu Bot",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.files: dict[str, StoredFile] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.chats: dict[int, Chat] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_seq = itertools.count(1)
        self._failures: dict[str, list[tuple[int, str, dict[str, Any] | None]]] = {}
        self._changed = asyncio.Condition()
        self._poll_generation = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.webhook: dict[str, Any] | None = None
        self.webhook_posts: list[tuple[int, int | str]] = []
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._allowed: set[str] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind to a free loopback port and serve."""
        app = web.Application(client_max_size=UPLOAD_MAX_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop serving; long polls still waiting are released first."""
        for task in list(self._webhook_tasks):
            task.cancel()
        self._poll_generation += 1
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def root(self) -> str:
        """The Bot API root, as ``REELBOT_TELEGRAM_API_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}"

    # -- what a test does as users -------------------------------------------------------------

    def private_chat(self, user: User) -> Chat:
        """The private chat between ``user`` and the bot."""
        chat = self.chats.get(user.id) or Chat(id=user.id, type="private", user=user)
        self.chats[chat.id] = chat
        return chat

    def group(
        self, chat_id: int, title: str = "Emu Group", *, admins: set[int] | None = None
    ) -> Chat:
        """A supergroup the bot is in (ids below -10^12, as Telegram gives them)."""
        chat = Chat(id=chat_id, type="supergroup", title=title, admins=admins or set())
        self.chats[chat.id] = chat
        return chat

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _message(
        self,
        chat: Chat,
        sender: dict[str, Any],
        *,
        reply_to: dict[str, Any] | None = None,
        **content: Any,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat.id),
            "from": sender,
            "chat": chat.to_dict(),
            "date": int(time.time()),
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(content)
        self.messages[(chat.id, message["message_id"])] = message
        return message

    def add_file(self, data: bytes, kind: str, ext: str) -> StoredFile:
        """Hold ``data`` as a Telegram file; its ``file_id`` works in getFile."""
        n = next(self._file_seq)
        stored = StoredFile(
            file_id=f"AgAC{kind[:3]}{n:06d}{secrets.token_urlsafe(12)}",
            unique_id=f"AQAD{n:08d}",
            data=data,
            path=f"{kind}/file_{n}.{ext}",
        )
        self.files[stored.file_id] = stored
        return stored

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        """PhotoSize list, smallest first, as Telegram makes them (thumbnails + the original)."""
        with Image.open(BytesIO(data)) as im:
            im.load()
            width, height = im.size
            sizes: list[dict[str, Any]] = []
            for side in (90, 320):
                if max(width, height) <= side:
                    break
                thumb = im.convert("RGB")
                thumb.thumbnail((side, side))
                buf = BytesIO()
                thumb.save(buf, "JPEG", quality=80)
                stored = self.add_file(buf.getvalue(), "photos", "jpg")
                sizes.append(
                    {
                        "file_id": stored.file_id,
                        "file_unique_id": stored.unique_id,
                        "file_size": len(stored.data),
                        "width": thumb.size[0],
                        "height": thumb.size[1],
                    }
                )
        stored = self.add_file(data, "photos", "jpg")
        sizes.append(
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.unique_id,
                "file_size": len(data),
                "width": width,
                "height": height,
            }
        )
        return sizes

    def _seen_by_bot(self, update: dict[str, Any]) -> bool:
        """Privacy mode (on by default, ``can_read_all_group_messages`` false): in a group a bot
        gets only the messages that start with a command, mention it by name or reply to it,
        unless it is an admin there (the Bot API's "Privacy mode" in its features page)."""
        message = update.get("message")
        if message is None or message["chat"]["type"] == "private":
            return True
        chat = self.chats.get(message["chat"]["id"])
        if self.bot["can_read_all_group_messages"] or (chat and self.bot["id"] in chat.admins):
            return True
        text = message.get("text") or message.get("caption") or ""
        replied = (message.get("reply_to_message") or {}).get("from", {})
        return (
            text.startswith("/")
            or f"@{self.bot['username']}".lower() in text.lower()
            or replied.get("id") == self.bot["id"]
        )

    def _push(self, update: dict[str, Any]) -> dict[str, Any]:
        if not self._seen_by_bot(update):
            return update  # in the chat, never sent to the bot
        self._updates.append(update)
        self._notify()
        if self.webhook is not None:
            self._send_to_webhook(update)
        return update

    def _send_to_webhook(self, update: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._post_update(update))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _post_update(self, update: dict[str, Any]) -> None:
        """POST one update to the webhook, retrying (as Telegram does) until it is accepted."""
        hook = self.webhook
        assert hook is not None
        headers = {"Content-Type": "application/json"}
        if hook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook["secret_token"]
        timeout = ClientTimeout(total=10)
        for attempt in range(5):
            try:
                async with (
                    ClientSession(timeout=timeout) as client,
                    client.post(hook["url"], data=json.dumps(update), headers=headers) as resp,
                ):
                    self.webhook_posts.append((update["update_id"], resp.status))
                    if resp.status == 200:
                        self._updates = [u for u in self._updates if u is not update]
                        self._notify()
                        return
            except (OSError, TimeoutError) as exc:
                self.webhook_posts.append((update["update_id"], repr(exc)))
            await asyncio.sleep(0.2 * 2**attempt)

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        # Callers may be sync (tests); waking the pollers is scheduled on the running loop.
        asyncio.get_running_loop().create_task(wake())

    def user_text(
        self, chat: Chat, user: User, text: str, *, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``user`` writes ``text`` in ``chat``; returns the update."""
        content: dict[str, Any] = {"text": text}
        if entities := _command_entities(text):
            content["entities"] = entities
        message = self._message(chat, user.to_dict(), reply_to=reply_to, **content)
        return self._push({"update_id": next(self._update_ids), "message": message})

    def user_photo(
        self, chat: Chat, user: User, data: bytes, caption: str | None = None
    ) -> dict[str, Any]:
        """``user`` sends a photo (with an optional caption); returns the update."""
        content: dict[str, Any] = {"photo": self._photo_sizes(data)}
        if caption:
            content["caption"] = caption
            if entities := _command_entities(caption):
                content["caption_entities"] = entities
        message = self._message(chat, user.to_dict(), **content)
        return self._push({"update_id": next(self._update_ids), "message": message})

    def user_document(
        self,
        chat: Chat,
        user: User,
        data: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        reported_size: int | None = None,
    ) -> dict[str, Any]:
        """``user`` sends a file as a document; ``reported_size`` fakes a big one."""
        stored = self.add_file(data, "documents", file_name.rsplit(".", 1)[-1])
        content: dict[str, Any] = {
            "document": {
                "file_id": stored.file_id,
                "file_unique_id": stored.unique_id,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": reported_size if reported_size is not None else len(data),
            }
        }
        if caption:
            content["caption"] = caption
            if entities := _command_entities(caption):
                content["caption_entities"] = entities
        message = self._message(chat, user.to_dict(), **content)
        return self._push({"update_id": next(self._update_ids), "message": message})

    def user_media(
        self,
        chat: Chat,
        user: User,
        items: list[tuple[str, bytes]],
        *,
        caption: str | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``user`` sends ``("photo" | "video" | "animation", data)`` items; several make an album
        (a media group): one Message, and one update, per item, all with the same
        ``media_group_id`` and the caption on the first only, as the clients send it. Albums
        hold 2-10 photos and videos (sendMediaGroup's media); an animation goes alone. An
        animation also sets ``document`` ("for backward compatibility"). Returns the updates."""
        if len(items) > 1 and (len(items) > 10 or any(k == "animation" for k, _ in items)):
            raise ValueError("an album holds 2-10 photos and videos")
        group = str(secrets.randbits(60)) if len(items) > 1 else None
        updates = []
        for n, (kind, data) in enumerate(items):
            content: dict[str, Any] = {}
            if kind == "photo":
                content["photo"] = self._photo_sizes(data)
            else:
                media = self._video_object(data, {}, kind)
                content[kind] = media
                if kind == "animation":
                    content["document"] = media
            if group is not None:
                content["media_group_id"] = group
            if caption and n == 0:
                content["caption"] = caption
                if entities := _command_entities(caption):
                    content["caption_entities"] = entities
            message = self._message(chat, user.to_dict(), reply_to=reply_to, **content)
            updates.append(self._push({"update_id": next(self._update_ids), "message": message}))
        return updates

    def user_sticker(self, chat: Chat, user: User) -> dict[str, Any]:
        """``user`` sends a sticker."""
        stored = self.add_file(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "stickers", "webp")
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "🦊",
        }
        message = self._message(chat, user.to_dict(), sticker=sticker)
        return self._push({"update_id": next(self._update_ids), "message": message})

    def press_button(self, user: User, message: dict[str, Any], data: str) -> dict[str, Any]:
        """``user`` presses the inline button with ``data`` under a bot message."""
        buttons = [
            b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row
        ]
        if data not in {b.get("callback_data") for b in buttons}:
            raise AssertionError(f"no button {data!r} on message {message['message_id']}")
        query = {
            "id": str(secrets.randbits(62)),
            "from": user.to_dict(),
            "message": message,
            "chat_instance": str(secrets.randbits(62)),
            "data": data,
        }
        return self._push({"update_id": next(self._update_ids), "callback_query": query})

    def redeliver(self, update: dict[str, Any]) -> dict[str, Any]:
        """Hand out an update again, same update_id and all (as after a lost confirmation)."""
        return self._push(json.loads(json.dumps(update)))

    def fail(
        self,
        method: str,
        status: int = 500,
        times: int = 1,
        description: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` and the Bot API's body:
        ``{"ok": false, "error_code": status, "description": ...}`` (``parameters.retry_after``
        too when given). The handler does not run, so nothing the call would change changes."""
        if not 400 <= status <= 599:
            raise ValueError(f"an error answer needs a 4xx or 5xx status, not {status}")
        if description is None:
            description = _ERROR_DESCRIPTIONS.get(status, f"Error {status}")
            if status == 429 and retry_after is not None:
                description = f"Too Many Requests: retry after {retry_after}"
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        queue = self._failures.setdefault(method.lower(), [])
        queue.extend([(status, description, parameters)] * times)

    def fail_next(self, method: str, times: int = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``retry_after``."""
        self.fail(method, 429, times, retry_after=retry_after)

    # -- what a test reads ---------------------------------------------------------------------

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        """Successful calls of ``method`` (to ``chat_id`` when given), oldest first."""
        return [
            c
            for c in self.calls
            if c.method.lower() == method.lower()
            and c.status == 200
            and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))
        ]

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Messages the bot has in ``chat_id`` now (edits applied), oldest first."""
        return [
            m
            for (cid, _), m in sorted(self.messages.items())
            if cid == chat_id and m["from"].get("id") == self.bot["id"]
        ]

    async def wait_for(
        self, predicate: Callable[[], Any], *, within: float = 10.0, what: str = "condition"
    ) -> Any:
        """Wait until ``predicate()`` is truthy and return its value; fail after ``within`` s."""
        deadline = time.monotonic() + within
        async with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = [(c.method, c.status, c.error) for c in self.calls[-15:]]
                    raise AssertionError(f"timed out waiting for {what}; last calls: {recent}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))

    # -- HTTP --------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.json()
            params.update(body or {})
        elif ctype == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    files[part.name] = bytes(await part.read(decode=True))
                else:
                    params[part.name] = await part.text()
        elif request.can_read_body:
            params.update(dict(await request.post()))  # type: ignore[arg-type]
        return params, files

    async def _handle_method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        at = time.monotonic()
        try:
            params, files = await self._params(request)
        except Exception as exc:  # a malformed body is a 400 on the real server as well
            return self._error_response(
                Call(method, {}, {}, at), ApiError(400, f"Bad Request: {exc}")
            )
        call = Call(method=method, params=params, files=files, at=at)
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            failures = self._failures.get(method.lower())
            if failures:
                code, description, parameters = failures.pop(0)
                raise ApiError(code, description, parameters)
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params, files)
        except ApiError as exc:
            return self._error_response(call, exc)
        call.result = result
        self._notify()
        return web.json_response({"ok": True, "result": result})

    def _error_response(self, call: Call, exc: ApiError) -> web.Response:
        call.status = exc.code
        call.error = exc.description
        self._notify()
        body: dict[str, Any] = {
            "ok": False,
            "error_code": exc.code,
            "description": exc.description,
        }
        if exc.parameters:
            body["parameters"] = exc.parameters
        return web.json_response(body, status=exc.code)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.path == path:
                return web.Response(body=stored.data, content_type="application/octet-stream")
        return web.Response(status=404, text="Not Found")

    # -- reading parameters --------------------------------------------------------------------

    @staticmethod
    def _json(params: dict[str, Any], name: str) -> Any:
        value = params.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from exc
        return value

    def _chat(self, params: dict[str, Any]) -> Chat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    def _reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = self._json(params, "reply_markup")
        if markup is None:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and len(data.encode()) > CALLBACK_DATA_MAX:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return dict(markup)

    def _reply_to(self, chat: Chat, params: dict[str, Any]) -> dict[str, Any] | None:
        reply = self._json(params, "reply_parameters")
        message_id = reply.get("message_id") if isinstance(reply, dict) else None
        if message_id is None and params.get("reply_to_message_id"):
            message_id = int(params["reply_to_message_id"])
        if message_id is None:
            return None
        target = self.messages.get((chat.id, int(message_id)))
        if target is None:
            allow = isinstance(reply, dict) and reply.get("allow_sending_without_reply")
            if allow:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        # The real API nests the replied-to message without its own reply_to_message.
        return {k: v for k, v in target.items() if k != "reply_to_message"}

    def _text_content(self, params: dict[str, Any], key: str, limit: int) -> dict[str, Any]:
        text = params.get(key)
        if text is None:
            return {}
        text = str(text)
        visible = _visible(text, params.get("parse_mode"))
        if key == "text" and not visible.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(visible) > limit:
            what = "message is too long" if key == "text" else "message caption is too long"
            raise ApiError(400, f"Bad Request: {what}")
        return {key: visible}

    def _bot_message(self, chat: Chat, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        markup = self._reply_markup(params)
        if markup is not None:
            content["reply_markup"] = markup
        message = self._message(
            chat, self._bot_user(), reply_to=self._reply_to(chat, params), **content
        )
        # Keep what was sent, HTML and all, so a test can check the markup it was given.
        message_raw = dict(message)
        message_raw["_raw"] = {k: params.get(k) for k in ("text", "caption", "parse_mode")}
        self.messages[(chat.id, message["message_id"])] = message_raw
        return message

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot["id"],
            "is_bot": True,
            "first_name": self.bot["first_name"],
            "username": self.bot["username"],
        }

    def _upload(self, params: dict[str, Any], files: dict[str, bytes], name: str) -> bytes:
        value = params.get(name)
        if name in files:
            data = files[name]
        elif isinstance(value, str) and value.startswith("attach://"):
            data = files.get(value.removeprefix("attach://"), b"")
            if not data:
                raise ApiError(400, f"Bad Request: {name} attach not found")
        elif isinstance(value, str) and value in self.files:
            data = self.files[value].data
        else:
            raise ApiError(400, f"Bad Request: there is no {name} in the request")
        if not data:
            raise ApiError(400, "Bad Request: file must be non-empty")
        if len(data) > UPLOAD_MAX_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        return data

    @staticmethod
    def _clean(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if not k.startswith("_")}

    # -- methods -------------------------------------------------------------------------------

    async def _m_getme(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return self.bot

    async def _m_deletewebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        self.webhook = None
        return True

    async def _m_setwebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return await self._m_deletewebhook(params, files)
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {"url": url, "secret_token": secret}
        for update in list(self._updates):
            self._send_to_webhook(update)
        return True

    async def _m_getwebhookinfo(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    async def _m_setmycommands(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        commands = self._json(params, "commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = list(commands)
        return True

    async def _m_getmycommands(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return self.commands

    async def _m_getupdates(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = min(float(params.get("timeout") or 0), LONG_POLL_MAX_S)
        # A newer getUpdates ends the one still waiting with 409, as the real server does.
        self._poll_generation += 1
        generation = self._poll_generation
        async with self._changed:
            self._changed.notify_all()
        if offset:
            # Confirming an offset forgets every update before it.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        # allowed_updates is remembered by the server until the next call that gives it.
        if params.get("allowed_updates") is not None:
            self._allowed = set(self._json(params, "allowed_updates") or []) or None
        allowed = self._allowed
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                if generation != self._poll_generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only "
                        "one bot instance is running",
                    )
                ready = [
                    u
                    for u in self._updates
                    if u["update_id"] >= offset and (allowed is None or allowed & u.keys())
                ][:limit]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    return ready
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=left)

    def _count_send(self, chat: Chat) -> None:
        """One more message to ``chat``; a group over ``group_per_minute`` gets 429."""
        if chat.id > 0 or not self.group_per_minute:
            return
        now = time.monotonic()
        sent = [t for t in self._group_sends.get(chat.id, []) if now - t < 60.0]
        if len(sent) >= self.group_per_minute:
            wait = max(1, round(60.0 - (now - sent[0])))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._group_sends[chat.id] = [*sent, now]

    def _input_photo(self, item: Any, files: dict[str, bytes]) -> bytes:
        """An InputMediaPhoto's bytes (``attach://<name>`` or a file id); 400 otherwise."""
        if not isinstance(item, dict) or item.get("type") != "photo":
            raise ApiError(400, "Bad Request: wrong type of the web page content")
        return self._upload({"media": item.get("media")}, files, "media")

    async def _m_sendmediagroup(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        """2-10 photos as one album; returns the Messages. It takes no reply_markup (the
        method has no such parameter; an album carries no keyboard)."""
        chat = self._chat(params)
        media = self._json(params, "media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of messages in a media group")
        self._count_send(chat)
        group_id = str(next(self._file_seq) + 10**12)
        reply_to = self._reply_to(chat, params)
        sent = []
        for item in media:
            data = self._input_photo(item, files)
            content = self._text_content(item, "caption", CAPTION_MAX)
            message = self._message(
                chat,
                self._bot_user(),
                reply_to=reply_to,
                photo=self._photo_sizes(data),
                media_group_id=group_id,
                **content,
            )
            sent.append(self._clean(message))
        return sent

    async def _m_editmessagemedia(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        """A photo message's photo replaced (``attach://`` upload); a text message has none."""
        message = self._own_message(params)
        if not {"photo", "video", "document", "animation"} & message.keys():
            raise ApiError(400, "Bad Request: there is no media in the message to edit")
        data = self._input_photo(self._json(params, "media"), files)
        message["photo"] = self._photo_sizes(data)
        message.pop("caption", None)  # the new media's caption (none given: none)
        message["edit_date"] = int(time.time())
        markup = self._reply_markup(params)
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        return self._clean(message)

    async def _m_sendmessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        self._count_send(chat)
        content = self._text_content(params, "text", TEXT_MAX)
        if not content:
            raise ApiError(400, "Bad Request: message text is empty")
        return self._clean(self._bot_message(chat, params, **content))

    def _own_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params)
        key = (chat.id, int(params.get("message_id") or 0))
        message = self.messages.get(key)
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message["from"].get("id") != self.bot["id"]:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    async def _m_editmessagetext(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        message = self._own_message(params)
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        content = self._text_content(params, "text", TEXT_MAX)
        if not content:
            raise ApiError(400, "Bad Request: message text is empty")
        markup = self._reply_markup(params)
        if content["text"] == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(400, _NOT_MODIFIED)
        message.update(content, edit_date=int(time.time()))
        message["_raw"] = {k: params.get(k) for k in ("text", "parse_mode")}
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        return self._clean(message)

    async def _m_editmessagereplymarkup(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> Any:
        message = self._own_message(params)
        markup = self._reply_markup(params)
        if markup == message.get("reply_markup") or (
            markup is None and "reply_markup" not in message
        ):
            raise ApiError(400, _NOT_MODIFIED)
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return self._clean(message)

    async def _m_deletemessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        key = (chat.id, int(params.get("message_id") or 0))
        if self.messages.pop(key, None) is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        return True

    def _caption(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._text_content(params, "caption", CAPTION_MAX)

    async def _m_sendphoto(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        self._count_send(chat)
        data = self._upload(params, files, "photo")
        if len(data) > PHOTO_MAX_BYTES:
            raise ApiError(400, "Bad Request: PHOTO_SAVE_FILE_INVALID")
        try:
            with Image.open(BytesIO(data)) as im:
                width, height = im.size
        except Exception as exc:
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED") from exc
        if width + height > 10000 or max(width, height) > 20 * min(width, height):
            raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        content = self._caption(params)
        return self._clean(
            self._bot_message(chat, params, photo=self._photo_sizes(data), **content)
        )

    def _video_object(self, data: bytes, params: dict[str, Any], name: str) -> dict[str, Any]:
        stored = self.add_file(data, "videos", "mp4")
        width = int(params.get("width") or 0)
        height = int(params.get("height") or 0)
        duration = float(params.get("duration") or 0)
        try:
            from reelbot.generation.media import probe_video

            info = probe_video(data)
        except ImportError:
            info = None
        except ValueError as exc:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified") from exc
        if info is not None:
            width, height = info.width, info.height
            duration = info.frames / info.fps if info.fps else duration
        return {
            "duration": round(duration),
            "width": width,
            "height": height,
            "file_name": f"{name}.mp4",
            "mime_type": "video/mp4",
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "file_size": len(data),
        }

    async def _m_sendvideo(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        self._count_send(chat)
        data = self._upload(params, files, "video")
        content = self._caption(params)
        video = self._video_object(data, params, "video")
        return self._clean(self._bot_message(chat, params, video=video, **content))

    async def _m_sendanimation(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        self._count_send(chat)
        data = self._upload(params, files, "animation")
        content = self._caption(params)
        animation = self._video_object(data, params, "animation")
        return self._clean(
            self._bot_message(chat, params, animation=animation, document=animation, **content)
        )

    async def _m_senddocument(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        self._count_send(chat)
        data = self._upload(params, files, "document")
        stored = self.add_file(data, "documents", "bin")
        document = {
            "file_name": "document",
            "mime_type": "application/octet-stream",
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "file_size": len(data),
        }
        content = self._caption(params)
        return self._clean(self._bot_message(chat, params, document=document, **content))

    async def _m_getfile(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        stored = self.files.get(str(params.get("file_id", "")))
        if stored is None:
            raise ApiError(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
        if len(stored.data) > DOWNLOAD_MAX_BYTES:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "file_size": len(stored.data),
            "file_path": stored.path,
        }

    async def _m_answercallbackquery(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired")
        return True

    async def _m_getchatmember(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat = self._chat(params)
        user_id = int(params.get("user_id") or 0)
        status = "administrator" if user_id in chat.admins else "member"
        member: dict[str, Any] = {
            "user": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "status": status,
        }
        if status == "administrator":
            member.update(
                can_be_edited=False,
                is_anonymous=False,
                can_manage_chat=True,
                can_delete_messages=True,
                can_manage_video_chats=True,
                can_restrict_members=True,
                can_promote_members=False,
                can_change_info=True,
                can_invite_users=True,
                can_post_stories=False,
                can_edit_stories=False,
                can_delete_stories=False,
            )
        return member
