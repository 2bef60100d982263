"""The web chat as a ``Surface``: a job's status message is its card on the client's pages."""

from __future__ import annotations

from reelbot.bots.web.views import job_view, status_view
from reelbot.chat.replies import Button, Reply
from reelbot.chat.service import ChatService
from reelbot.chat.surface import Conversation, result_buttons
from reelbot.chat.texts import Status
from reelbot.config import Settings
from reelbot.errors import InvalidImage
from reelbot.jobs import ReplyAddress
from reelbot.queue.delivery import Delivery
from reelbot.runtime.http import Hub
from reelbot.store.records import JobRecord

__all__ = ["WebConversation", "WebSurface"]

POSITION_EVERY_S = 1.0
"""How often a waiting job's place in line is redrawn."""


class WebSurface:
    """Cards and texts pushed to the open pages of a client (the chat is the client id)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def post_status(self, reply: ReplyAddress, job_id: str, text: str) -> str | None:
        """Nothing to post: the command's answer is the job's card."""
        return job_id

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        """Redraw the card's state, progress, preview and buttons."""
        self.hub.push(reply.channel_id, status_view(job_id, status, preview, buttons))

    async def post_result(
        self, record: JobRecord, data: bytes, buttons: tuple[Button, ...]
    ) -> str | None:
        """The whole card with its result (the page loads it from /media)."""
        self.show(record, delivered=True)
        return record.id

    async def answer(self, reply: ReplyAddress, answer: Reply) -> None:
        """A text bubble on the client's pages."""
        self.hub.push(reply.channel_id, {"type": "text", "text": answer.text})

    async def fetch_input(self, ref: str) -> bytes:
        """Nothing to fetch: the page sends its image with the command."""
        raise InvalidImage("Attach the image to the command again.")

    def show(self, record: JobRecord, *, delivered: bool = False) -> None:
        """Push a job's whole card to its client's pages."""
        self.hub.push(record.request.reply.channel_id, job_view(record, delivered=delivered))


class WebConversation(Conversation):
    """One card per job: the result, a failure or a cancel all end on the same card."""

    def __init__(self, service: ChatService, surface: WebSurface, settings: Settings) -> None:
        # Pages take every event: no platform rate limit to keep under.
        super().__init__(
            service, surface, settings, edit_interval_s=0.0, positions_every_s=POSITION_EVERY_S
        )
        self.web = surface

    async def deliver(self, delivery: Delivery) -> str | None:
        """The final card; the result's bytes stay in Redis for /media."""
        record = delivery.record
        self.throttle.forget(record.id)
        if delivery.kind == "result":
            return await self.web.post_result(record, delivery.data or b"", result_buttons(record))
        # A failed job's card keeps its re-roll; a cancelled one says so.
        self.web.show(record)
        return record.id
