"""The HTTP side of the web chat: the page, commands in, events out, results served."""

from __future__ import annotations

import logging
import re

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reelbot.bots.web.chat import WebChat
from reelbot.bots.web.page import render_page
from reelbot.chat.replies import reply_for
from reelbot.chat.uploads import MAX_FILE_BYTES, MAX_FILES, TOO_HEAVY, Upload, oversized
from reelbot.errors import (
    BackendUnavailable,
    Busy,
    InvalidMask,
    QuotaExceeded,
    ReelbotError,
    TransientError,
    UserError,
)
from reelbot.runtime.http import (
    ERROR_STATUS,
    Hub,
    TokenGate,
    declared_length,
    event_stream,
    ranged,
    status_for,
)

log = logging.getLogger(__name__)

__all__ = ["CLIENT_HEADER", "COOKIE", "build_app"]

COOKIE = "reelbot_token"
CLIENT_HEADER = "x-reelbot-client"
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_FORM_BYTES = MAX_FILES * MAX_FILE_BYTES + 64 * 1024
"""The largest command form: four files at the limit, plus the text fields and multipart framing."""
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    body = {"type": "error", "code": code, "message": message}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _id(value: str | None, what: str) -> str:
    if value is None or not _ID.match(value):
        raise UserError(f"The page sent no valid {what}; reload it.")
    return value


async def _answer(_: Request, exc: Exception) -> Response:
    """The app's one error handler (Starlette's ``exception_handlers``): the status by class,
    the words from ``reelbot.chat.replies``, a Retry-After where the wait is known."""
    if isinstance(exc, HTTPException):
        if exc.status_code != 400:
            # Routing's 404 and 405 keep Starlette's own plain answer.
            return PlainTextResponse(str(exc.detail), exc.status_code, headers=exc.headers)
        return _error(400, "bad_request", str(exc.detail))  # a form Starlette could not parse
    status = status_for(exc)
    if status == 503 and not isinstance(exc, ReelbotError):
        log.warning("web chat: the queue cannot be reached: %s", exc)
        exc = BackendUnavailable(str(exc))
    retry = exc.retry_after if isinstance(exc, TransientError | QuotaExceeded | Busy) else None
    retry = retry or (10 if isinstance(exc, Busy) else None)
    headers = {"Retry-After": str(round(retry))} if retry else {}
    code = exc.code if isinstance(exc, ReelbotError) else ReelbotError.code
    return _error(status, code, reply_for(exc, where=" in the web chat"), **headers)


def build_app(
    chat: WebChat, hub: Hub, *, token: str | None, loopback: bool, public_host: str | None = None
) -> Starlette:
    """The app; ``token``: on every request; on ``loopback``, Host: loopback or ``public_host``."""
    gate = TokenGate(token, cookie=COOKIE)

    def refused() -> Response:
        return _error(401, "unauthorised", "This web chat needs its access token.")

    async def page(request: Request) -> Response:
        exchanged = gate.exchange(request, lambda: HTMLResponse("Wrong access token.", 401))
        if exchanged is not None:
            return exchanged
        if not gate.allows(request):
            return HTMLResponse(
                "This reelbot web chat needs its access token: open /?token=YOUR_TOKEN "
                "(REELBOT_WEB_TOKEN).",
                status_code=401,
            )
        return HTMLResponse(render_page(chat.catalog.set_name))

    async def command(request: Request) -> Response:
        # A custom header makes a cross-site POST need a preflight, which is never answered.
        client = request.headers.get(CLIENT_HEADER)
        if declared_length(request) > MAX_FORM_BYTES:
            return _error(413, "too_large", TOO_HEAVY)
        client = _id(client, "client id")
        async with request.form(max_files=MAX_FILES, max_fields=8) as form:
            message_id = _id(_field(form.get("msg")), "message id")
            files, masks = _files(form, "image"), _files(form, "mask")
            if len(masks) > 1:
                raise InvalidMask("Send one mask (white = change) with the command.")
            sizes = (oversized(f.content_type or "", f.size or 0) for f in (*files, *masks))
            if (refused := next(filter(None, sizes), None)) is not None:
                return _error(413, "too_large", refused)  # each file by its kind's limit
            uploads = [await _upload(each) for each in (*files, *masks)]
            mask, text = uploads.pop() if masks else None, _field(form.get("text")) or ""
            if action := _field(form.get("action")):  # a button (Edit region's: with a mask)
                job, index = _field(form.get("job")) or "", _index(_field(form.get("index")))
                edit = {"text": text, "mask": mask.data if mask else None}
                answer = await chat.action(client, message_id, action, job, index, **edit)
            else:
                answer = await chat.command(client, message_id, text, *uploads, mask=mask)
        return JSONResponse(answer)

    async def events(request: Request) -> Response:
        return event_stream(hub, _id(request.query_params.get("client"), "client id"))

    async def history(request: Request) -> Response:
        client = _id(request.query_params.get("client"), "client id")
        return JSONResponse({"jobs": await chat.history(client)})

    async def media(request: Request) -> Response:
        job_id = str(request.path_params["job_id"])
        # An <img> sends no headers of ours: the page's client id comes in the query (views).
        client = request.query_params.get("client") or ""
        part = _index(request.query_params.get("part"))  # one image of a grid
        found = await chat.media(job_id, client=client, part=part) if _ID.match(client) else None
        if found is None:
            return _error(404, "not_found", "No such result (or it expired).")
        return ranged(request, *found)  # the bytes and their type

    routes = [
        Route("/", page),
        Route("/api/command", gate.guard(command, refused), methods=["POST"]),
        Route("/api/events", gate.guard(events, refused)),
        Route("/api/history", gate.guard(history, refused)),
        Route("/media/{job_id:str}", gate.guard(media, refused)),
    ]
    # On loopback, a page on another site that resolves its own name to 127.0.0.1 (DNS
    # rebinding) would send its own Host header: refuse it.
    hosts = [*LOOPBACK_HOSTS, *filter(None, [public_host])]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(
        routes=routes,
        middleware=middleware if loopback else [],
        exception_handlers={cls: _answer for cls in (*ERROR_STATUS, HTTPException)},
    )


def _field(value: str | UploadFile | None) -> str | None:
    return value if isinstance(value, str) else None


def _index(value: str | None) -> int | None:
    """Image i of a grid (the form's ``index``, the media's ``part``); None: the whole result."""
    if value and not re.fullmatch("[0-9]{1,2}", value):
        raise UserError("The page sent no valid image number; reload it.")
    return int(value) if value else None


def _files(form: FormData, name: str) -> list[UploadFile]:
    """The files sent under ``name`` (a file input left empty sends one without a name)."""
    return [f for f in form.getlist(name) if isinstance(f, UploadFile) and f.filename]


async def _upload(value: UploadFile) -> Upload:
    # The parser counted each file's bytes (``size``): none here is over the limit.
    data = await value.read(MAX_FILE_BYTES + 1)
    return Upload(data, value.content_type or "", value.filename or "")
