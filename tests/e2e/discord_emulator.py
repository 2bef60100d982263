"""A local Discord: the REST API and the gateway websocket, enough for discord.py and reelbot.

It keeps Discord's rules that bots get wrong (the 3-second first response, the 15-minute
interaction token, the attachment size limit, exact ``application/json``, GUILD_CREATE only for
the GUILDS intent while every interaction carries the member's raw role ids), can inject 429s
and gateway disconnects, and records every call with a timestamp so tests can assert on them.
Payload shapes follow what discord.py 2.7.1 accepted from a local server (shared reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

API_PREFIX = "/api/v10"
FIRST_RESPONSE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
MANAGE_GUILD = 1 << 5
GUILDS_INTENT = 1 << 0
"""The one intent after which Discord sends GUILD_CREATE (roles, channels) following READY."""
# What a plain member has in the reference payload: view, send, embed, attach, history.
MEMBER_PERMISSIONS = 265280
ADMIN_PERMISSIONS = MEMBER_PERMISSIONS | MANAGE_GUILD
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 51) - 1
EPHEMERAL = 1 << 6

DISCORD_EPOCH_MS = 1420070400000
_last_snowflake = [0]


def snowflake() -> str:
    """A fresh, increasing Discord id that carries the current time, as Discord's do: discord.py
    reads an interaction's ``created_at`` from it (the token's 15 minutes count from there)."""
    now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
    _last_snowflake[0] = max(_last_snowflake[0] + 1, now)
    return str(_last_snowflake[0])


class EmuClock:
    """Wall time plus an offset a test can advance, for token expiry without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds on the emulator's clock."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward."""
        self.offset += seconds


@dataclass
class Call:
    """One REST request as the emulator saw it."""

    at: float
    method: str
    path: str
    status: int
    auth: str | None
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Interaction:
    """An interaction the emulator created, and what the bot did with it."""

    id: str
    token: str
    created_at: float
    payload: dict[str, Any]
    channel_id: str
    user_id: str
    response_type: int | None = None
    responded_at: float | None = None
    ephemeral: bool = False
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)


@dataclass
class Fault:
    """A response to inject instead of the real one."""

    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    retry_after: float = 0.2
    via: bool = True
    code: int | None = None
    message: str | None = None


# Discord's JSON error bodies for the statuses a test may inject ("code" is Discord's own error
# code: https://discord.com/developers/docs/topics/opcodes-and-status-codes#json).
FAULT_BODIES: dict[int, tuple[int, str]] = {
    400: (50035, "Invalid Form Body"),
    401: (0, "401: Unauthorized"),
    403: (50013, "Missing Permissions"),
    404: (10008, "Unknown Message"),
    413: (40005, "Request entity too large"),
}


class _Session:
    """One gateway session: its sequence and the events a RESUME replays."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.seq = 0
        self.sent: list[dict[str, Any]] = []
        self.ws: web.WebSocketResponse | None = None


class DiscordEmulator:
    """The local Discord server; ``async with`` it, then point discord.py at its URLs."""

    def __init__(
        self,
        *,
        bot_token: str = "emu-bot-token",
        heartbeat_ms: int = 5000,
        guild_id: str | None = None,
        channel_id: str | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.heartbeat_ms = heartbeat_ms
        self.clock = EmuClock()
        self.app_id = snowflake()
        self.guild_id = guild_id or snowflake()
        self.channel_id = channel_id or snowflake()
        self.dm_channel_id = snowflake()
        # The guild's roles by id; @everyone's id is the guild's, as on Discord. A member's
        # ``roles`` never lists @everyone.
        self.roles: dict[str, dict[str, Any]] = {
            self.guild_id: _role(self.guild_id, "@everyone", MEMBER_PERMISSIONS, position=0)
        }
        self.member_roles: dict[str, list[str]] = {}
        self.identify_intents: list[int] = []
        self.bot_user = {
            "id": self.app_id,
            "username": "emu-bot",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "flags": 0,
        }
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.channel_messages: dict[str, list[str]] = {}
        self.interactions: dict[str, Interaction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.violations: list[str] = []
        self._faults: list[Fault] = []
        self._sessions: dict[str, _Session] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> DiscordEmulator:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self._sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The REST base to give discord.py (``Route.BASE``)."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The gateway to give discord.py (``DEFAULT_GATEWAY``)."""
        return self.base_url.replace("http://", "ws://") + "/gateway"

    # -- test controls --------------------------------------------------------------------

    def inject(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 429,
        count: int = 1,
        retry_after: float = 0.2,
        via: bool = True,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (429 carries retry_after;
        a 4xx Discord's JSON error body, ``code`` and ``message`` as given or Discord's own for
        that status). ``/cdn/…`` downloads can be refused the same way."""
        self._faults.append(
            Fault(
                method.upper(),
                re.compile(path_regex),
                status,
                count,
                retry_after,
                via,
                code,
                message,
            )
        )

    async def disconnect(self, code: int = 4000) -> None:
        """Drop every gateway connection, as Discord does; the client should RESUME."""
        for session in self._sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=code)

    @property
    def connected(self) -> bool:
        """Whether a gateway client is connected and identified."""
        return any(s.ws is not None and not s.ws.closed for s in self._sessions.values())

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked on every change) and return it."""
        async with asyncio.timeout(within), self._changed:
            while not (value := predicate()):
                # Also poll: the predicate may look at state outside the emulator.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
            return value

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def add_attachment(
        self, filename: str, data: bytes, content_type: str = "image/png"
    ) -> dict[str, Any]:
        """Put a file on the emulator's CDN, as a user's upload; returns the attachment object."""
        att_id = snowflake()
        name = f"{att_id}_{filename}"
        self.cdn[name] = (data, content_type)
        url = f"{self.base_url}/cdn/{name}"
        size: dict[str, int] = {}
        if content_type.startswith("image/"):
            with contextlib.suppress(Exception):
                # Discord reports the pixel size of images it could read.
                width, height = Image.open(io.BytesIO(data)).size
                size = {"width": width, "height": height}
        return {
            **size,
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
            "ephemeral": True,
        }

    def user(self, user_id: str = "111111111111111111", name: str = "alice") -> dict[str, Any]:
        """A user object."""
        return {
            "id": user_id,
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
        }

    def add_role(self, name: str, permissions: int = 0) -> str:
        """Create a role in the guild (as a server admin would); returns its id."""
        role_id = snowflake()
        self.roles[role_id] = _role(role_id, name, permissions, position=len(self.roles))
        return role_id

    def give_role(self, user_id: str, role_id: str) -> None:
        """Give a member a role; their next interactions carry it in ``member.roles``."""
        if role_id not in self.roles or role_id == self.guild_id:
            raise KeyError(f"no assignable role {role_id}")
        held = self.member_roles.setdefault(user_id, [])
        if role_id not in held:
            held.append(role_id)

    def member_permissions(self, user_id: str, base: int = MEMBER_PERMISSIONS) -> int:
        """What Discord computes for a member: ``base`` (the @everyone permissions, or whatever
        a test says the member has) with their roles' permissions added."""
        for role_id in self.member_roles.get(user_id, []):
            base |= int(self.roles[role_id]["permissions"])
        if base & ADMINISTRATOR:
            base |= ALL_PERMISSIONS
        return base

    def guild_object(self) -> dict[str, Any]:
        """The guild as GUILD_CREATE carries it (to clients with the GUILDS intent)."""
        return {
            "id": self.guild_id,
            "name": "emu-guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": "999999999999999999",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "features": [],
            "roles": list(self.roles.values()),
            "emojis": [],
            "stickers": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "large": False,
            "unavailable": False,
            "member_count": 2,
            "voice_states": [],
            # Without GUILD_MEMBERS only the bot itself comes in the member list.
            "members": [
                {
                    "user": self.bot_user,
                    "roles": [],
                    "joined_at": "2024-01-01T00:00:00+00:00",
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "nick": None,
                    "avatar": None,
                    "premium_since": None,
                    "pending": False,
                }
            ],
            "channels": [self._channel_object(self.channel_id)],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, dict[str, Any]] | None = None,
        subcommand: str | None = None,
        user_id: str = "111111111111111111",
        permissions: int = MEMBER_PERMISSIONS,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        dm: bool = False,
    ) -> Interaction:
        """A user runs ``/name``; ``attachments`` maps an option name to an attachment object.

        ``dm`` sends it from a DM with the bot (a user-installed app: no guild, no member).
        """
        types = {bool: 5, int: 4, float: 10, str: 3}
        opts: list[dict[str, Any]] = [
            {"name": k, "type": types[type(v)], "value": v} for k, v in (options or {}).items()
        ]
        resolved: dict[str, Any] = {}
        for opt_name, att in (attachments or {}).items():
            opts.append({"name": opt_name, "type": 11, "value": att["id"]})
            resolved.setdefault("attachments", {})[att["id"]] = att
        if subcommand is not None:
            opts = [{"name": subcommand, "type": 1, "options": opts}]
        data: dict[str, Any] = {"id": self._command_id(name), "name": name, "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(2, data, user_id, permissions, size_limit, dm=dm)

    async def autocomplete(
        self, name: str, focused: str, value: str, *, user_id: str = "111111111111111111"
    ) -> Interaction:
        """Discord asks for choices while a user types into ``focused``."""
        data = {
            "id": self._command_id(name),
            "name": name,
            "type": 1,
            "options": [
                {"name": "prompt", "type": 3, "value": "x"},
                {"name": focused, "type": 3, "value": value, "focused": True},
            ],
        }
        return await self._dispatch_interaction(4, data, user_id, MEMBER_PERMISSIONS)

    async def click(
        self,
        message_id: str,
        custom_id: str,
        *,
        user_id: str = "111111111111111111",
        permissions: int = MEMBER_PERMISSIONS,
    ) -> Interaction:
        """A user clicks the button ``custom_id`` on a message."""
        message = self.messages[message_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._dispatch_interaction(
            3, data, user_id, permissions, DEFAULT_SIZE_LIMIT, message=message
        )

    def buttons(self, message_id: str) -> list[str]:
        """The custom_ids of the buttons on a message."""
        found: list[str] = []
        for row in self.messages[message_id].get("components", []):
            for comp in row.get("components", []):
                if "custom_id" in comp:
                    found.append(comp["custom_id"])
        return found

    def files_of(self, message_id: str) -> list[tuple[str, bytes]]:
        """The files attached to a message, as (filename, bytes)."""
        out: list[tuple[str, bytes]] = []
        for att in self.messages[message_id].get("attachments", []):
            name = att["url"].rsplit("/", 1)[1]
            out.append((att["filename"], self.cdn[name][0]))
        return out

    def _command_id(self, name: str) -> str:
        for cmds in self.commands.values():
            for cmd in cmds:
                if cmd["name"] == name:
                    return str(cmd["id"])
        return snowflake()

    async def _dispatch_interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: str,
        permissions: int,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        message: dict[str, Any] | None = None,
        *,
        dm: bool = False,
    ) -> Interaction:
        inter_id = snowflake()
        token = f"itok-{inter_id}-{snowflake()}"
        # Discord sends the member's role ids (raw strings, no @everyone) and their computed
        # permissions with every interaction in a guild, whatever intents the bot has.
        permissions = self.member_permissions(user_id, permissions)
        member = {
            "user": self.user(user_id, "alice" if user_id.startswith("1111") else f"u{user_id}"),
            "roles": list(self.member_roles.get(user_id, [])),
            "permissions": str(permissions),
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
        }
        payload: dict[str, Any] = {
            "id": inter_id,
            "application_id": self.app_id,
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": self.guild_id,
            "guild": {"id": self.guild_id, "locale": "en-US", "features": []},
            "channel_id": self.channel_id,
            "channel": {
                "id": self.channel_id,
                "type": 0,
                "guild_id": self.guild_id,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "flags": 0,
                "permissions": str(permissions),
            },
            "member": member,
            "app_permissions": "1125899906842623",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
            "attachment_size_limit": size_limit,
            "data": data,
        }
        if message is not None:
            payload["message"] = message
        channel_id = self.channel_id
        if dm:
            channel_id = self.dm_channel_id
            for key in ("guild_id", "guild", "member", "guild_locale"):
                payload.pop(key)
            payload["user"] = member["user"]
            payload["channel_id"] = channel_id
            payload["channel"] = {
                "id": channel_id,
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [member["user"]],
            }
            payload["context"] = 1
            payload["authorizing_integration_owners"] = {"1": user_id}
        inter = Interaction(
            id=inter_id,
            token=token,
            created_at=self.clock.now(),
            payload=payload,
            channel_id=channel_id,
            user_id=user_id,
        )
        self.interactions[inter_id] = inter
        await self._dispatch("INTERACTION_CREATE", payload)
        return inter

    # -- gateway --------------------------------------------------------------------------

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event on every session; a session without a socket keeps it for RESUME."""
        for session in self._sessions.values():
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.sent.append(frame)
            if session.ws is not None and not session.ws.closed:
                # A socket that died under us is fine: the frame waits in session.sent for RESUME.
                with contextlib.suppress(ConnectionError):
                    await session.ws.send_str(json.dumps(frame))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}}))
        session: _Session | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                op, d = frame.get("op"), frame.get("d")
                if op == 1:
                    self.heartbeats += 1
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    if d.get("token") != self.bot_token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    if d.get("intents", 0) & ((1 << 1) | (1 << 8) | (1 << 15)):
                        # Privileged intents this application was not granted.
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    intents = int(d.get("intents", 0))
                    self.identify_intents.append(intents)
                    self.identifies += 1
                    session = _Session(snowflake())
                    session.ws = ws
                    self._sessions[session.id] = session
                    session.seq += 1
                    ready = {
                        "v": 10,
                        "user": self.bot_user,
                        # Every guild the bot is in, unavailable; the full objects follow
                        # as GUILD_CREATE only for the GUILDS intent.
                        "guilds": [{"id": self.guild_id, "unavailable": True}],
                        "session_id": session.id,
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": self.app_id, "flags": 0},
                        "private_channels": [],
                    }
                    await ws.send_str(
                        json.dumps({"op": 0, "t": "READY", "s": session.seq, "d": ready})
                    )
                    if intents & GUILDS_INTENT:
                        session.seq += 1
                        frame = {
                            "op": 0,
                            "t": "GUILD_CREATE",
                            "s": session.seq,
                            "d": self.guild_object(),
                        }
                        session.sent.append(frame)
                        await ws.send_str(json.dumps(frame))
                    await self._notify()
                elif op == 6:
                    found = self._sessions.get(str(d.get("session_id")))
                    if found is None or d.get("token") != self.bot_token:
                        await ws.send_str(json.dumps({"op": 9, "d": False}))
                        continue
                    session = found
                    session.ws = ws
                    self.resumes += 1
                    seq = int(d.get("seq") or 0)
                    for frame_out in session.sent:
                        if frame_out["s"] > seq:
                            await ws.send_str(json.dumps(frame_out))
                    session.seq += 1
                    resumed = {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}
                    await ws.send_str(json.dumps(resumed))
                    await self._notify()
        finally:
            if session is not None and session.ws is ws:
                session.ws = None
            await self._notify()
        return ws

    # -- REST -----------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = f"/cdn/{request.match_info['name']}"
        found = self.cdn.get(request.match_info["name"])
        response = self._fault("GET", path)
        if response is None:
            response = (
                web.Response(status=404)
                if found is None
                else web.Response(body=found[0], headers={"Content-Type": found[1]})
            )
        call = Call(self.clock.now(), "GET", path, response.status, None, None, [], {})
        self.calls.append(call)
        return response

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        payload, files = await self._read_body(request)
        auth = request.headers.get("Authorization")
        response = self._fault(request.method, path)
        if response is None:
            try:
                response = await self._route(request, path, payload, files, auth)
            except _Reply as reply:
                response = reply.response
        self.calls.append(
            Call(
                at=self.clock.now(),
                method=request.method,
                path=path,
                status=response.status,
                auth=auth,
                json=payload,
                files=files,
                query=dict(request.query),
            )
        )
        await self._notify()
        return response

    def _fault(self, method: str, path: str) -> web.Response | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method == method and fault.pattern.search(path):
                fault.remaining -= 1
                if fault.status == 429:
                    headers = {"Retry-After": f"{fault.retry_after:.3f}"}
                    if fault.via:
                        headers["Via"] = "1.1 google"
                    return _json(
                        {
                            "message": "You are being rate limited.",
                            "retry_after": fault.retry_after,
                            "global": False,
                        },
                        429,
                        headers,
                    )
                known = FAULT_BODIES.get(fault.status, (0, "Server error"))
                body = {"message": fault.message or known[1], "code": fault.code or known[0]}
                return _json(body, fault.status)
        return None

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if not request.body_exists:
            return None, []
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            payload: Any = None
            files: list[tuple[str, bytes]] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":
                    payload = json.loads(data)
                else:
                    files.append((part.filename or "file", bytes(data)))  # type: ignore[union-attr]
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _bot_auth(self, auth: str | None) -> None:
        if auth != f"Bot {self.bot_token}":
            raise _Reply(_error(401, 0, "401: Unauthorized"))

    async def _route(
        self,
        request: web.Request,
        path: str,
        payload: Any,
        files: list[tuple[str, bytes]],
        auth: str | None,
    ) -> web.Response:
        method = request.method
        if path == "/users/@me" and method == "GET":
            self._bot_auth(auth)
            return _json(self.bot_user)
        if path in ("/oauth2/applications/@me", "/applications/@me") and method == "GET":
            self._bot_auth(auth)
            return _json(self._app_info())
        if path in ("/gateway", "/gateway/bot") and method == "GET":
            return _json(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if m := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", path):
            self._bot_auth(auth)
            scope = m.group(2) or "global"
            if method == "PUT":
                if problem := _command_problem(payload):
                    return _error(400, 50035, f"Invalid Form Body: {problem}")
                cmds = [
                    {**c, "id": snowflake(), "application_id": self.app_id, "version": snowflake()}
                    for c in payload
                ]
                self.commands[scope] = cmds
                return _json(cmds)
            if method == "GET":
                return _json(self.commands.get(scope, []))
        if m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._callback(m.group(1), m.group(2), payload, files)
        if m := re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/(@original|\d+))?", path):
            return self._webhook(method, m.group(2), m.group(3), payload, files, request)
        if m := re.fullmatch(r"/channels/(\d+)/messages(?:/(\d+))?", path):
            self._bot_auth(auth)
            return self._channel(method, m.group(1), m.group(2), payload, files)
        if m := re.fullmatch(r"/channels/(\d+)", path):
            self._bot_auth(auth)
            return _json(self._channel_object(m.group(1)))
        return _error(404, 0, f"404: Not Found ({method} {path})")

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": self.app_id,
            "name": "emu-app",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.user("999999999999999999", "owner"),
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _channel_object(self, channel_id: str) -> dict[str, Any]:
        return {
            "id": channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }

    def _token(self, token: str) -> Interaction:
        """The interaction a token belongs to; 401 once it is 15 minutes old, as Discord does."""
        for inter in self.interactions.values():
            if inter.token == token:
                if self.clock.now() - inter.created_at > TOKEN_LIFETIME_S:
                    raise _Reply(_error(401, 50027, "Invalid Webhook Token"))
                return inter
        raise _Reply(_error(404, 10015, "Unknown Webhook"))

    def _callback(
        self, inter_id: str, token: str, payload: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        inter = self.interactions.get(inter_id)
        if inter is None or inter.token != token:
            return _error(404, 10062, "Unknown interaction")
        if inter.response_type is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        late = self.clock.now() - inter.created_at
        if late > FIRST_RESPONSE_S:
            self.violations.append(f"interaction {inter_id} answered after {late:.2f}s")
            return _error(404, 10062, "Unknown interaction")
        kind = int(payload["type"])
        data = payload.get("data") or {}
        inter.response_type = kind
        inter.responded_at = self.clock.now()
        inter.ephemeral = bool(int(data.get("flags", 0)) & EPHEMERAL)
        body: dict[str, Any] = {
            "interaction": {
                "id": inter_id,
                "type": inter.payload["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": inter.ephemeral,
            }
        }
        if kind in (4, 5):
            content = data.get("content", "") if kind == 4 else ""
            msg = self._store_message(
                inter.channel_id,
                {**data, "content": content},
                files,
                interaction=inter,
                flags=(EPHEMERAL if inter.ephemeral else 0) | (128 if kind == 5 else 0),
            )
            inter.original_id = msg["id"]
            body["interaction"]["response_message_id"] = msg["id"]
            body["resource"] = {"type": kind, "message": msg}
        elif kind == 7:
            msg_id = inter.payload["message"]["id"]
            self._edit_message(msg_id, data, files)
            body["resource"] = {"type": kind, "message": self.messages[msg_id]}
        elif kind == 8:
            body["resource"] = {"type": kind}
        elif kind != 6:
            return _error(400, 50035, f"Invalid Form Body (type {kind})")
        if kind in (6, 7) and "message" in inter.payload:
            # After a component's (deferred) update, "@original" is the message it sits on.
            inter.original_id = inter.payload["message"]["id"]
        return _json(body)

    def _webhook(
        self,
        method: str,
        token: str,
        message: str | None,
        payload: Any,
        files: list[tuple[str, bytes]],
        request: web.Request,
    ) -> web.Response:
        inter = self._token(token)
        if message is None:
            if method != "POST":
                return _error(405, 0, "405: Method Not Allowed")
            if inter.response_type is None:
                return _error(404, 10062, "Unknown interaction")
            self._check_size(inter, files)
            flags = int((payload or {}).get("flags", 0))
            msg = self._store_message(inter.channel_id, payload or {}, files, inter, flags=flags)
            inter.followups.append(msg["id"])
            return (
                _json(msg)
                if request.query.get("wait") in ("1", "true", "True")
                else (web.Response(status=204))
            )
        msg_id = inter.original_id if message == "@original" else message
        if msg_id is None or msg_id not in self.messages:
            return _error(404, 10008, "Unknown Message")
        if method == "GET":
            return _json(self.messages[msg_id])
        if method == "DELETE":
            self._delete_message(msg_id)
            return web.Response(status=204)
        if method == "PATCH":
            self._check_size(inter, files)
            self._edit_message(msg_id, payload or {}, files)
            return _json(self.messages[msg_id])
        return _error(405, 0, "405: Method Not Allowed")

    def _channel(
        self,
        method: str,
        channel_id: str,
        message_id: str | None,
        payload: Any,
        files: list[tuple[str, bytes]],
    ) -> web.Response:
        if message_id is None:
            if method == "POST":
                if any(len(data) > DEFAULT_SIZE_LIMIT for _, data in files):
                    return _error(413, 40005, "Request entity too large")
                nonce = (payload or {}).get("nonce")
                if nonce is not None and (payload or {}).get("enforce_nonce"):
                    # Discord returns the earlier message for a repeated nonce (a few minutes).
                    for msg_id in self.channel_messages.get(channel_id, []):
                        if self.messages[msg_id].get("nonce") == str(nonce):
                            return _json(self.messages[msg_id])
                msg = self._store_message(channel_id, payload or {}, files, None)
                if nonce is not None:
                    msg["nonce"] = str(nonce)
                return _json(msg)
            if method == "GET":
                ids = self.channel_messages.get(channel_id, [])
                return _json([self.messages[i] for i in reversed(ids)])
            return _error(405, 0, "405: Method Not Allowed")
        if message_id not in self.messages:
            return _error(404, 10008, "Unknown Message")
        if method == "PATCH":
            if self.messages[message_id]["author"]["id"] != self.app_id:
                return _error(403, 50005, "Cannot edit a message authored by another user")
            self._edit_message(message_id, payload or {}, files)
            return _json(self.messages[message_id])
        if method == "DELETE":
            self._delete_message(message_id)
            return web.Response(status=204)
        if method == "GET":
            return _json(self.messages[message_id])
        return _error(405, 0, "405: Method Not Allowed")

    def _check_size(self, inter: Interaction, files: list[tuple[str, bytes]]) -> None:
        limit = int(inter.payload["attachment_size_limit"])
        for name, data in files:
            if len(data) > limit:
                self.violations.append(f"file {name} of {len(data)} bytes over {limit}")
                raise _Reply(_error(413, 40005, "Request entity too large"))

    # -- messages -------------------------------------------------------------------------

    def _attachments(self, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        out = []
        for filename, data in files:
            ctype = "video/mp4" if filename.endswith(".mp4") else "image/png"
            if filename.endswith((".jpg", ".jpeg")):
                ctype = "image/jpeg"
            elif filename.endswith(".webp"):
                ctype = "image/webp"
            att = self.add_attachment(filename, data, ctype)
            att.pop("ephemeral")
            out.append(att)
        return out

    def _store_message(
        self,
        channel_id: str,
        data: dict[str, Any],
        files: list[tuple[str, bytes]],
        interaction: Interaction | None,
        *,
        flags: int = 0,
    ) -> dict[str, Any]:
        content = str(data.get("content") or "")
        if len(content) > 2000:
            raise _Reply(_error(400, 50035, "Invalid Form Body: content over 2000 characters"))
        self._check_components(data.get("components") or [])
        msg_id = snowflake()
        msg: dict[str, Any] = {
            "id": msg_id,
            "type": 0,
            "channel_id": channel_id,
            "content": content,
            "author": self.bot_user,
            "attachments": self._attachments(files),
            "embeds": data.get("embeds") or [],
            "components": data.get("components") or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "flags": flags,
            "application_id": self.app_id,
        }
        if interaction is not None:
            msg["webhook_id"] = self.app_id
            msg["interaction_id"] = interaction.id
        if ref := data.get("message_reference"):
            msg["message_reference"] = {
                k: str(v) if k.endswith("_id") and v is not None else v for k, v in ref.items()
            }
        for mention in re.findall(r"<@!?(\d+)>", content):
            msg["mentions"].append(self.user(mention))
        self.messages[msg_id] = msg
        self.channel_messages.setdefault(channel_id, []).append(msg_id)
        return msg

    def _edit_message(
        self, msg_id: str, data: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> None:
        msg = self.messages[msg_id]
        if "content" in data:
            content = str(data["content"] or "")
            if len(content) > 2000:
                raise _Reply(_error(400, 50035, "Invalid Form Body: content over 2000 characters"))
            msg["content"] = content
        if "components" in data:
            self._check_components(data["components"] or [])
            msg["components"] = data["components"] or []
        if "embeds" in data:
            msg["embeds"] = data["embeds"] or []
        if files or "attachments" in data:
            keep = {str(a.get("id")) for a in data.get("attachments", [])}
            kept = [a for a in msg["attachments"] if a["id"] in keep]
            msg["attachments"] = kept + self._attachments(files)
        msg["flags"] = int(msg["flags"]) & ~128
        msg["edited_timestamp"] = datetime.now(UTC).isoformat()
        msg.setdefault("edits", 0)
        msg["edits"] += 1
        msg.setdefault("edit_times", []).append(self.clock.now())

    def _check_components(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for comp in row.get("components", []):
                cid = comp.get("custom_id")
                if cid is not None and len(cid) > 100:
                    raise _Reply(_error(400, 50035, "Invalid Form Body: custom_id over 100"))

    def _delete_message(self, msg_id: str) -> None:
        msg = self.messages.pop(msg_id)
        ids = self.channel_messages.get(msg["channel_id"], [])
        if msg_id in ids:
            ids.remove(msg_id)

    # -- queries for tests ----------------------------------------------------------------

    def original(self, inter: Interaction) -> dict[str, Any] | None:
        """The interaction's original response message, if it exists."""
        return self.messages.get(inter.original_id or "")

    def followups(self, inter: Interaction) -> list[dict[str, Any]]:
        """Followup messages sent with the interaction's token."""
        return [self.messages[m] for m in inter.followups if m in self.messages]

    def channel(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Messages in a channel, oldest first."""
        ids = self.channel_messages.get(channel_id or self.channel_id, [])
        return [self.messages[i] for i in ids]


class _Reply(Exception):
    """Stop routing and answer with this response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _role(role_id: str, name: str, permissions: int, *, position: int) -> dict[str, Any]:
    """A role object as Discord sends it (``permissions`` is a string)."""
    return {
        "id": role_id,
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


_NAME = re.compile(r"^[-_'\w]{1,32}$")
"""A command's or an option's name: 1-32 word characters, dashes, apostrophes (Discord's regex,
less the scripts); a slash command's name is lowercase."""


def _command_problem(commands: list[dict[str, Any]]) -> str | None:
    """What Discord's "Application Command Object" rules refuse in a bulk overwrite: names and
    descriptions (1-100 characters), at most 25 options, required options before optional ones."""
    for command in commands:
        for item in (command, *command.get("options", [])):
            name, described = str(item.get("name", "")), str(item.get("description", ""))
            if not _NAME.match(name) or name != name.lower():
                return f"{name!r} is not a valid name"
            if not 1 <= len(described) <= 100:
                return f"{name!r}: a description is 1 to 100 characters"
        options = command.get("options", [])
        if len(options) > 25:
            return f"/{command['name']} has {len(options)} options, at most 25"
        required = [bool(o.get("required")) for o in options if o.get("type", 3) > 2]
        if required != sorted(required, reverse=True):
            return f"/{command['name']}: required options must be listed before optional ones"
    return None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json;
    # aiohttp's json_response would add "; charset=utf-8".
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status)
