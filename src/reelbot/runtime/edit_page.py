"""The web editor behind Edit region links: ``GET /edit?t=TOKEN`` (the page), its image, and
``POST /edit/submit`` (the prompt and the mask), for the people of every platform.

The web process serves these next to its chat (``reelbot.bots.web.service``), outside the chat's
access token: the signed link is their authentication (``reelbot.chat.edit_links``), and the
first browser that opens it keeps it (an HttpOnly cookie scoped to /edit). A job is made by a
``ChatService`` of the link's platform, so Discord's or Telegram's own process posts the result in
the chat the link came from. Here, not in ``bots/web``: it is no part of the web chat platform,
and ``reelbot.chat`` stays free of HTTP.
"""

from __future__ import annotations

import html
import logging
import re
import time
from functools import cache
from importlib.resources import files

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reelbot.catalog import Catalog
from reelbot.chat.edit_links import EditLinks, Grant, claim, read_grant
from reelbot.chat.replies import reply_for
from reelbot.chat.service import ChatService
from reelbot.chat.uploads import oversized
from reelbot.config import Settings
from reelbot.errors import (
    BackendUnavailable,
    InvalidMask,
    JobNotFound,
    LinkRefused,
    UserError,
)
from reelbot.inputs import DEFAULT_MAX_BYTES
from reelbot.runtime.http import ERROR_STATUS, declared_length, status_for

log = logging.getLogger(__name__)

__all__ = ["COOKIE_PREFIX", "MAX_SUBMIT_BYTES", "QUEUED", "EditPage"]

COOKIE_PREFIX = "reelbot_edit_"
"""The claim cookie of link ``id`` is ``reelbot_edit_<id>``: one per link a browser opened."""
MAX_SUBMIT_BYTES = DEFAULT_MAX_BYTES + 64 * 1024
"""The largest submit: one mask at the image limit, the prompt and the multipart framing."""
QUEUED = "Queued: the result will be posted in the chat."
_MSG = re.compile(r"[A-Za-z0-9_-]{8,64}")
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_HEADERS |= {"X-Frame-Options": "DENY"}
"""The token is in the address: never cached, never sent on as a referrer; never framed."""
STATUS = ERROR_STATUS | {LinkRefused: 403, JobNotFound: 404}
"""The web chat's error statuses, and a refused link's and a gone job's."""


@cache
def _static(name: str) -> str:
    return files(__package__).joinpath(f"static/{name}").read_text(encoding="utf-8")


def _status(exc: BaseException) -> int:
    if isinstance(exc, LinkRefused) and exc.reason == "expired":
        return 410
    return status_for(exc, STATUS)


class EditPage:
    """The /edit routes on one Redis, with a ``ChatService`` per platform whose links come."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.redis, self.settings, self.catalog = redis, settings, catalog
        self._links: dict[str, EditLinks] = {}
        self.secure = (settings.public_url or "").startswith("https://")
        """A cookie marked Secure where the page is served over HTTPS."""

    def links(self, platform: str) -> EditLinks:
        """Links over a ``ChatService`` of ``platform`` (made once per platform)."""
        if platform not in self._links:
            service = ChatService(self.redis, self.settings, self.catalog, platform=platform)
            self._links[platform] = EditLinks(service)
        return self._links[platform]

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes to serve (added to the web chat's app)."""
        return [
            Route("/edit", self.page),
            Route("/edit/editor.js", self.script),
            Route("/edit/source", self.source),
            Route("/edit/submit", self.submit, methods=["POST"]),
        ]

    async def _open(self, request: Request, *, first: bool = False) -> tuple[Grant, str]:
        """The link's grant and this browser's claim secret (``first``: the page may claim)."""
        grant = await read_grant(self.redis, self.settings, request.query_params.get("t", ""))
        cookie = request.cookies.get(COOKIE_PREFIX + grant.id)
        return grant, await claim(self.redis, grant, cookie, first=first)

    def _refused(self, exc: BaseException, *, as_page: bool) -> Response:
        if isinstance(exc, RedisError):
            exc = BackendUnavailable(str(exc))
        words = reply_for(exc, where=" on the edit page")
        status = _status(exc)
        if as_page:
            page = _static("edit.html").replace("__REFUSED__", html.escape(words))
            return HTMLResponse(page, status, headers=_HEADERS)
        body = {"type": "error", "code": getattr(exc, "code", "internal"), "message": words}
        return JSONResponse(body, status, headers=_HEADERS)

    async def page(self, request: Request) -> Response:
        """The editor for a valid link; the first browser to open it claims it."""
        try:
            grant, browser = await self._open(request, first=True)
        except Exception as exc:
            return self._refused(exc, as_page=True)
        response = HTMLResponse(_static("edit.html").replace("__REFUSED__", ""), headers=_HEADERS)
        response.set_cookie(
            COOKIE_PREFIX + grant.id,
            browser,
            max_age=max(1, round(grant.expires_at - time.time())),
            path="/edit",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def script(self, request: Request) -> Response:
        """The region editor (the web chat's page uses it too)."""
        return Response(_static("editor.js"), media_type="text/javascript")

    async def source(self, request: Request) -> Response:
        """The image to paint over, for the browser that opened the link."""
        try:
            grant, _ = await self._open(request)
            data, mime = await self.links(grant.platform).source(grant)
        except Exception as exc:
            return self._refused(exc, as_page=False)
        return Response(data, media_type=mime, headers=_HEADERS)

    async def submit(self, request: Request) -> Response:
        """The prompt and the mask (white = change) → the link's person's region edit."""
        try:
            size = declared_length(request)
            if not 0 < size <= MAX_SUBMIT_BYTES:
                said = "Send the mask as a form with its length, one image of 20 MB at most."
                return JSONResponse({"type": "error", "code": "too_large", "message": said}, 413)
            grant, _ = await self._open(request)
            async with request.form(max_files=1, max_fields=3) as form:
                request_id, text, mask = form.get("msg"), form.get("text"), form.get("mask")
                if not isinstance(request_id, str) or not _MSG.fullmatch(request_id):
                    raise UserError("The page sent no valid request id; reload it.")
                if not isinstance(mask, UploadFile) or not mask.size:
                    raise InvalidMask("Paint the area to change, then submit.")
                if (refused := oversized(mask.content_type or "image/png", mask.size)) is not None:
                    raise InvalidMask(refused)
                data = await mask.read(DEFAULT_MAX_BYTES + 1)
            prompt, links = text if isinstance(text, str) else "", self.links(grant.platform)
            ticket = await links.submit(grant, prompt, data, request_id=request_id)
        except Exception as exc:
            return self._refused(exc, as_page=False)
        said = f"{QUEUED} (job {ticket.job_id})"
        body = {"type": "queued", "job_id": ticket.job_id, "text": said}
        return JSONResponse(body, headers=_HEADERS)
