"""Serving HTTP in a reelbot process: listening sockets with clear errors, uvicorn under the
process's own signals, access tokens, request limits, byte ranges and server-sent events. No chat
and no product here: the web chat and the Telegram webhook are Starlette apps served this way."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import uvicorn
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import ASGIApp

from reelbot.errors import (
    Busy,
    ConfigError,
    QuotaExceeded,
    ReelbotError,
    TransientError,
    UserError,
)

__all__ = [
    "ERROR_STATUS",
    "Hub",
    "QuietServer",
    "TokenGate",
    "bind",
    "declared_length",
    "event_stream",
    "events",
    "is_loopback",
    "ranged",
    "serve_until",
    "status_for",
]

Handler = Callable[[Request], Awaitable[Response]]

KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies and the browser from closing an idle stream."""
QUEUE_SIZE = 256
"""Events a slow stream may fall behind by; older ones are dropped (progress is redrawn anyway)."""


ERROR_STATUS: dict[type[BaseException], int] = {
    UserError: 400,
    QuotaExceeded: 429,
    Busy: 503,
    TransientError: 503,
    RedisError: 503,
    OSError: 503,
    ReelbotError: 500,
    Exception: 500,
}
"""Error class → HTTP status for reelbot's HTTP answers (``status_for``)."""


def status_for(exc: BaseException, table: dict[type[BaseException], int] = ERROR_STATUS) -> int:
    """The HTTP status of ``exc``: that of the nearest class in its MRO that ``table`` names."""
    return next(table[cls] for cls in type(exc).__mro__ if cls in table)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int, *, setting: str, one: bool = False) -> socket.socket:
    """A listening socket, or one clear line naming the setting (``REELBOT_WEB``: its
    ``_HOST`` and ``_PORT``; with ``one``, a single ``HOST:PORT`` variable by its own name)
    when the address is wrong or the port is taken."""
    host_var, port_var = (setting, setting) if one else (f"{setting}_HOST", f"{setting}_PORT")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"{host_var}: cannot listen on {host}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{port_var}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            f"is another reelbot running? Pick another port."
        ) from exc
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave SIGINT and SIGTERM to ``reelbot up`` and the platform processes."""
        yield


def quiet_server(app: ASGIApp) -> QuietServer:
    """A uvicorn server for ``app`` that logs nothing of its own and stops within 3 s."""
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", ws="none",
        timeout_graceful_shutdown=3,
    )  # fmt: skip
    return QuietServer(config)


async def serve_until(
    server: QuietServer,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    close_s: float,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve on ``sock`` until ``stop`` is set; then ``on_stop`` (end the open streams, which
    uvicorn would wait for) and ``close_s`` for the server to finish."""
    http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        await stop.wait()
    finally:
        on_stop()
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(close_s):
                await asyncio.wait([http])
        http.cancel()
        await asyncio.gather(http, return_exceptions=True)


def ranged(request: Request, data: bytes, mime: str) -> Response:
    """The bytes, or the one range asked for (browsers read videos in ranges to seek)."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
    if match is None or not (match.group(1) or match.group(2)):
        return Response(data, media_type=mime, headers=headers)
    size = len(data)
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:
        start, end = max(0, size - int(match.group(2))), size - 1
    end = min(end, size - 1)
    if start > end or start >= size:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start : end + 1], status_code=206, media_type=mime, headers=headers)


async def events(queue: asyncio.Queue[Any]) -> AsyncIterator[str]:
    """Server-sent events of what arrives on ``queue`` (None ends the stream), with a retry
    hint and keep-alive comments."""
    yield "retry: 1000\n\n"
    while True:
        try:
            payload = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if payload is None:
            return
        yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def event_stream(hub: Hub, key: str) -> StreamingResponse:
    """The server-sent events pushed to ``key``, until the client goes or the server stops."""

    async def chunks() -> AsyncIterator[str]:
        async with hub.listen(key) as queue:
            async for chunk in events(queue):
                yield chunk

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(chunks(), media_type="text/event-stream", headers=headers)


class Hub:
    """The open event streams per key (the web chat: a page's client id), and fan-out to them."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.closed = False

    def clients(self) -> list[str]:
        """The keys with a stream open now."""
        return list(self._listeners)

    def push(self, key: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every open stream of ``key``; a full queue drops its oldest."""
        for queue in self._listeners.get(key, ()):
            _put(queue, payload)

    @contextlib.asynccontextmanager
    async def listen(self, key: str) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue of this key's events; None in it means the server is stopping."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        if self.closed:
            queue.put_nowait(None)
        self._listeners.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[key]

    def close(self) -> None:
        """End every open stream, so the HTTP server can stop without waiting on them."""
        self.closed = True
        for listeners in self._listeners.values():
            for queue in listeners:
                _put(queue, None)


def _put(queue: asyncio.Queue[dict[str, Any] | None], payload: dict[str, Any] | None) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(payload)


class TokenGate:
    """A secret every request must carry: in ``header`` when named (a webhook's secret
    header), else as a bearer token or the ``cookie``. ``token`` None: the gate is open."""

    def __init__(self, token: str | None, *, cookie: str = "", header: str = "") -> None:
        self.token = token.encode() if token is not None else None
        self.cookie, self.header = cookie, header

    def allows(self, request: Request) -> bool:
        """Whether the request carries the token (compared in constant time)."""
        if self.token is None:
            return True
        if self.header:
            given = request.headers.get(self.header, "")
        else:
            given = request.cookies.get(self.cookie, "") if self.cookie else ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token)

    def guard(self, handler: Handler, refuse: Callable[[], Response]) -> Handler:
        """``handler`` behind the gate: a request without the token gets ``refuse()``."""

        async def guarded(request: Request) -> Response:
            return await handler(request) if self.allows(request) else refuse()

        return guarded

    def exchange(self, request: Request, wrong: Callable[[], Response]) -> Response | None:
        """A ``?token=`` in the address: a redirect that trades it for the cookie, so it leaves
        the address bar (``wrong()`` when it is not the token); None when none was given."""
        given = request.query_params.get("token")
        if self.token is None or given is None:
            return None
        if not hmac.compare_digest(given.encode(), self.token):
            return wrong()
        response = RedirectResponse(request.url.path, status_code=303)
        response.set_cookie(self.cookie, self.token.decode(), httponly=True, samesite="strict")
        return response


def declared_length(request: Request) -> int:
    """The request's Content-Length, 0 when absent or not a number: a body over a limit is
    refused from the header alone, before a byte of it is read."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0
