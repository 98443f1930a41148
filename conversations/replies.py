"""Running one reply: stream it from Letta, relay it to the conversation's sockets, mirror it.

A reply runs as an asyncio task of its own, started by the consumer that received the message, so
that socket stays responsive and the reply is finished and stored even if that socket goes away.
Every write that pushes an event to clients lives here, and events go out only after the write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import fragments, selectors, services
from conversations.letta_gateway import (
    ContentDelta,
    LettaError,
    RunStarted,
    Stopped,
    StreamError,
    ToolCallDelta,
    ToolReturn,
    get_gateway,
)
from conversations.models import Conversation, Message

logger = logging.getLogger(__name__)

EVENT_TYPE = "conversation.html"

# Replies running in this process, by conversation pk; the tasks are kept referenced here.
_running: dict[int, asyncio.Task[None]] = {}


def group_name(conversation_pk: int) -> str:
    """The channel group of a conversation's sockets: derived from our key, never from input."""
    return f"conversation.{int(conversation_pk)}"


async def publish(conversation_pk: int, html: str) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(group_name(conversation_pk), {"type": EVENT_TYPE, "html": html})


async def send_to(channel_name: str, html: str) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(channel_name, {"type": EVENT_TYPE, "html": html})


def reply_is_running(conversation_pk: int) -> bool:
    task = _running.get(conversation_pk)
    return task is not None and not task.done()


def reply_start(
    *, conversation: Conversation, user_message: Message, sender_channel: str
) -> asyncio.Task[None]:
    task = asyncio.create_task(
        reply_run(
            conversation=conversation, user_message=user_message, sender_channel=sender_channel
        ),
        name=f"reply-{conversation.pk}",
    )
    _running[conversation.pk] = task
    task.add_done_callback(
        lambda t: (
            _running.pop(conversation.pk, None) if _running.get(conversation.pk) is t else None
        )
    )
    return task


@dataclass
class _Draft:
    """A message of the reply while it streams."""

    letta_id: str
    kind: str
    stream_id: str
    name: str = ""
    run_id: str = ""
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


_KIND_TO_TYPE = {
    "assistant": Message.Type.ASSISTANT,
    "reasoning": Message.Type.REASONING,
    "tool_call": Message.Type.TOOL_CALL,
}


class _Relay:
    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.draft: _Draft | None = None

    async def piece(
        self, letta_id: str, kind: str, text: str, *, name: str = "", run_id: str = ""
    ) -> None:
        draft = self.draft
        if draft is not None and (draft.letta_id, draft.kind) == (letta_id, kind):
            draft.parts.append(text)
            if name and not draft.name:
                draft.name = name
            if text:
                await publish(self.conversation.pk, fragments.stream_token(draft.stream_id, text))
            return
        await self.finish()
        # Letta gives a step's reasoning and its answer one id: the kind tells them apart.
        stream_id = f"{kind}-{letta_id}"
        self.draft = _Draft(letta_id, kind, stream_id, name=name, run_id=run_id, parts=[text])
        await publish(self.conversation.pk, fragments.stream_started(stream_id, kind, text, name))

    async def finish(self, *, error: str = "") -> None:
        """Store the message being streamed, and show its final form in place of the draft."""
        draft, self.draft = self.draft, None
        if draft is None:
            return
        message = await database_sync_to_async(services.message_record)(
            conversation=self.conversation,
            letta_id=draft.letta_id,
            message_type=_KIND_TO_TYPE[draft.kind],
            content=draft.text,
            name=draft.name,
            run_id=draft.run_id,
            error=error,
        )
        await publish(self.conversation.pk, fragments.stream_finished(draft.stream_id, message))


STOP_REASONS = {
    "end_turn": "",
    "max_steps": "The agent stopped after the most steps it may take in one reply.",
    "max_tokens_exceeded": "The reply was cut off: it reached the model's token limit.",
    "cancelled": "The reply was stopped.",
    "no_tool_call": "",
    "tool_rule": "",
    "requires_approval": "The agent is waiting for a tool call to be approved.",
}


async def reply_run(
    *, conversation: Conversation, user_message: Message, sender_channel: str
) -> None:
    gateway = get_gateway()
    pk = conversation.pk
    relay = _Relay(conversation)
    run_started = False
    failure = ""
    stop_note = ""
    cursor = await database_sync_to_async(selectors.message_last_letta_id)(
        conversation=conversation
    )
    await publish(pk, fragments.reply_status(f"{conversation.agent.name} is answering…", busy=True))
    try:
        async for event in gateway.astream_reply(
            conversation_id=conversation.letta_id, text=user_message.content, otid=user_message.otid
        ):
            if isinstance(event, RunStarted):
                run_started = True
            elif isinstance(event, ContentDelta):
                run_started = True
                await relay.piece(event.message_id, event.kind, event.text, run_id=event.run_id)
            elif isinstance(event, ToolCallDelta):
                await relay.piece(
                    event.message_id,
                    "tool_call",
                    event.arguments,
                    name=event.name,
                    run_id=event.run_id,
                )
            elif isinstance(event, ToolReturn):
                await relay.finish()
                message = await database_sync_to_async(services.message_record)(
                    conversation=conversation,
                    letta_id=event.message_id,
                    message_type=Message.Type.TOOL_RETURN,
                    content=event.content,
                    name=event.status,
                    run_id=event.run_id,
                )
                await publish(pk, fragments.message_appended(message))
            elif isinstance(event, StreamError):
                failure = event.message or event.error_type
            elif isinstance(event, Stopped):
                stop_note = STOP_REASONS.get(
                    event.reason, f"The reply ended early ({event.reason})."
                )
    except LettaError as exc:
        failure = str(exc)
        logger.warning("reply to %s failed: %s", conversation.letta_id, exc)
    except asyncio.CancelledError:
        await relay.finish(error="The reply was stopped.")
        raise
    await relay.finish(error=failure or stop_note)

    if run_started:
        await _reconcile(conversation, cursor)
    if failure:
        kept = await database_sync_to_async(_kept_by_letta)(user_message)
        if kept:
            await _note(pk, conversation, failure)
        else:
            # Letta did not keep the message: say so next to it, and give the text back.
            await database_sync_to_async(services.message_mark_failed)(
                message=user_message, error=failure
            )
            await publish(pk, fragments.message_replaced(user_message))
            await send_to(
                sender_channel, fragments.composer(conversation, text=user_message.content)
            )
    elif stop_note:
        await _note(pk, conversation, stop_note)
    await publish(pk, fragments.reply_status("", busy=False))


def _kept_by_letta(message: Message) -> bool:
    message.refresh_from_db(fields=["letta_id"])
    return message.letta_id is not None


async def _note(pk: int, conversation: Conversation, text: str) -> None:
    note = await database_sync_to_async(services.message_record_error)(
        conversation=conversation, text=text
    )
    await publish(pk, fragments.message_appended(note))


async def _reconcile(conversation: Conversation, cursor: str | None) -> None:
    """Let Letta's stored copy settle the mirror: ids of our user message, anything not streamed."""
    try:
        infos = await get_gateway().alist_messages(
            conversation_id=conversation.letta_id, after=cursor
        )
    except LettaError as exc:
        logger.warning("could not re-read %s after a reply: %s", conversation.letta_id, exc)
        return
    added = await database_sync_to_async(services.message_reconcile)(
        conversation=conversation, infos=infos
    )
    for message in added:
        await publish(conversation.pk, fragments.message_appended(message))
