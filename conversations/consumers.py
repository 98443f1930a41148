"""The conversation websocket: receives what a person types, relays the streamed reply.

Frames in are what htmx's ws extension sends for the composer form: JSON with ``message`` (and
``HEADERS``). Frames out are HTML fragments for out-of-band swaps.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from conversations import fragments, replies, selectors, services
from conversations.models import Conversation

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
MAX_FRAME_BYTES = 256 * 1024


class MessageRejected(ValueError):
    """A frame that cannot be sent to Letta; the text is shown to the person."""


def validate_message(raw: str | None) -> str:
    """The text to send, or ``MessageRejected`` with a reason fit to show."""
    try:
        data = json.loads(raw or "")
    except ValueError as exc:
        raise MessageRejected("That message could not be read. Please try again.") from exc
    if not isinstance(data, dict):
        raise MessageRejected("That message could not be read. Please try again.")
    text = data.get("message")
    if not isinstance(text, str):
        raise MessageRejected("That message could not be read. Please try again.")
    if not text.strip():
        raise MessageRejected("Type a message first.")
    limit = settings.LETTACHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise MessageRejected(
            f"That message is {len(text):,} characters long; the limit is {limit:,}. "
            "Please shorten it."
        )
    return text


class ConversationConsumer(AsyncWebsocketConsumer):
    conversation: Conversation
    group: str

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        letta_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        conversation = await database_sync_to_async(selectors.conversation_get)(
            user=user, letta_id=letta_id
        )
        if conversation is None:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.conversation = conversation
        self.group = replies.group_name(conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # A running reply is not cancelled: it finishes and is stored for the next visit.

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None or len(text_data or "") > MAX_FRAME_BYTES:
            await self.send(fragments.composer_error("That message could not be read."))
            return
        try:
            text = validate_message(text_data)
        except MessageRejected as exc:
            await self.send(fragments.composer_error(str(exc)))
            return
        if replies.reply_is_running(self.conversation.pk):
            await self.send(
                fragments.composer_error(
                    f"{self.conversation.agent.name} is still answering. "
                    "Your message is still in the box: send it when the reply is done."
                )
            )
            return
        untitled = not self.conversation.summary
        message = await database_sync_to_async(services.message_create_user)(
            conversation=self.conversation, text=text, otid=str(uuid.uuid4())
        )
        # The sender's box is emptied only now that the message is stored.
        await self.send(fragments.composer(self.conversation))
        await replies.publish(self.conversation.pk, fragments.message_appended(message))
        if untitled:
            await replies.publish(self.conversation.pk, fragments.thread_title(self.conversation))
        replies.reply_start(
            conversation=self.conversation, user_message=message, sender_channel=self.channel_name
        )

    async def conversation_html(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])
