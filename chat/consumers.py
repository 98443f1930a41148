"""The conversation websocket: receives what a person types, relays the streamed reply.

Frames in are what htmx's ws extension sends for the composer form: JSON with ``message`` (and
``HEADERS``). Frames out are HTML fragments for out-of-band swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from chat import fragments, limits, sessions, websink
from conversations import actions, quotas, relay, selectors, usage
from conversations.models import Conversation, Run
from conversations.relay import reaper
from lettachat import shutdown
from lettachat.aio import db
from lettachat.layers import fragments_layer

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class MessageRejected(ValueError):
    """A frame that cannot be sent to Letta; the text is shown to the person."""


def validate_message(raw: str | None) -> str:
    """The text to send, or ``MessageRejected`` with a reason fit to show."""
    try:
        data = json.loads(raw or "")
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's depth
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


FrameKind = Literal["message", "resume", "stop", "retry", "approval"]
KINDS: tuple[FrameKind, ...] = ("resume", "stop", "retry", "approval")


def _frame(raw: str | None) -> tuple[FrameKind, dict[str, Any] | None]:
    """The frame's ``type`` (a message when absent) and its data, if it is a JSON object."""
    try:
        data = json.loads(raw or "")
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        return "message", None
    if not isinstance(data, dict):
        return "message", None
    kind = data.get("type")
    return next((k for k in KINDS if k == kind), "message"), data


def _int(value: object) -> int:
    try:
        return max(0, int(cast(Any, value)))  # a number or its text; anything else is 0
    except (TypeError, ValueError):
        return 0


def _otid(value: object) -> str:
    """The page's id for this message (resent with it after a lost connection), or a new one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.uuid4())


class ConversationConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """One page's socket on one conversation.

    Frames in are dispatched by type to a handler (``HANDLERS``); writes go through actions
    (``conversations.actions``), which tell every client. Frames out are the web sink's
    fragments (``chat.websink``), or answers to this page alone.
    """

    conversation: Conversation
    group: str
    # While a snapshot of the running reply is on its way: the group events that came meanwhile.
    pending: list[dict[str, Any]] | None = None
    snapshot_from: str = ""
    snapshot_request: str = ""  # the id of the snapshot asked for: only its answer is taken
    takeover: asyncio.Task[None] | None = None
    # The relay and tick of the last snapshot: group events up to it are already on the page.
    watermark: tuple[str, int] = ("", 0)
    # The stored messages this socket has given its page: a page that catches up gets only what
    # came after them, and a message it has is never added to it again.
    shown: set[int]
    awaiting_resume: bool = False
    # This socket's channel on the fragments layer (lettachat/layers.py), where its
    # conversation's group sends arrive: its own channel when that is the default layer.
    fragments_channel: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' own loop, reading a second channel layer for the conversation's fragments
        when there is one (Redis); what arrives on either is dispatched in turn, as ever."""
        self.fragments = fragments_layer()
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.fragments is self.channel_layer:
            await super().__call__(scope, receive, send)
            return
        self.scope = scope
        self.base_send = send
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.fragments_channel = await self.fragments.new_channel()
        fragments_receive = functools.partial(self.fragments.receive, self.fragments_channel)
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch(
                [receive, self.channel_receive, fragments_receive], self.dispatch
            )

    @property
    def fragments_address(self) -> str:
        """Where this socket's conversation fragments arrive: its channel on the fragments
        layer, or its own channel when that is the default layer."""
        return self.fragments_channel or self.channel_name

    async def connect(self) -> None:
        reaper.ensure_running()  # this process takes over runs whose relay died elsewhere
        shutdown.track(self)  # closed with "server restarting" when the process goes away
        if not limits.socket_open(self):  # this person already holds the most sockets allowed
            await self.accept()
            await self.close(code=limits.CLOSE_TOO_MANY_SOCKETS)
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        letta_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        conversation = await db(selectors.conversation_get)(user=user, letta_id=letta_id)
        if conversation is None:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.conversation = conversation
        self.shown = set()
        self.group = websink.group_name(conversation.pk)
        # Until the page says what it shows (its first frame, "resume"), events wait here: the
        # catch-up it gets covers them.
        self.pending = []
        self.awaiting_resume = True
        await self.fragments.group_add(self.group, self.fragments_address)
        await self.accept()
        await sessions.socket_opened(self)  # closes the socket when the session ends

    async def disconnect(self, code: int) -> None:
        shutdown.untrack(self)
        limits.socket_closed(self)
        await sessions.socket_closed(self)
        if self.takeover is not None:
            self.takeover.cancel()
        if hasattr(self, "group"):
            await self.fragments.group_discard(self.group, self.fragments_address)
        # A running reply is not cancelled: it finishes and is stored for the next visit.

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if size := limits.frame_too_big(text_data, bytes_data):  # before it is even parsed
            await self.send(fragments.composer_error(limits.frame_refusal(size)))
            return
        kind, data = _frame(text_data) if bytes_data is None else ("message", None)
        # A flood (of any kind of frame) is answered and reaches nothing else. Stop always works.
        if kind != "stop" and (wait := limits.send_wait(self)):
            await self.send(fragments.composer_error(limits.send_refusal(wait)))
            return
        if not await sessions.still_signed_in(self):
            return  # the session ended: the socket is closing, the frame goes nowhere
        if self.awaiting_resume and kind != "resume":
            await self._stop_waiting_for_resume()  # a client that does not resume
        await HANDLERS[kind](self, Frame(text_data, bytes_data, data))

    # Handlers, one per kind of frame ---------------------------------------------------------

    async def on_message(self, frame: Frame) -> None:
        if frame.bytes_data is not None:
            await self.send(fragments.composer_error("That message could not be read."))
            return
        try:
            text = validate_message(frame.text)
        except MessageRejected as exc:
            await self.send(fragments.composer_error(str(exc)))
            return
        if await self._over_quota():
            return
        try:
            await actions.message_send(
                conversation=self.conversation,
                text=text,
                otid=_otid((frame.data or {}).get("otid")),
                sender=websink.sender_of(self.channel_name),
            )
        except actions.ConversationBusy:
            await self.send(fragments.composer_error(self._still_answering()))
            return
        except (
            actions.ConversationReadOnly,
            actions.ApprovalPendingError,  # the text stays in the box
            quotas.QuotaExceeded,
        ) as exc:
            await self.send(fragments.composer_error(str(exc)))
            return
        # The sender's box is emptied only now that the message is stored.
        await self.send(fragments.composer(self.conversation))

    async def on_resume(self, frame: Frame) -> None:
        data = frame.data or {}
        await self._resume(after=_int(data.get("after")), drafts=bool(data.get("drafts")))

    async def on_stop(self, frame: Frame) -> None:
        await self._stop(retry=False)

    async def on_retry(self, frame: Frame) -> None:
        message_pk = _int((frame.data or {}).get("message"))
        message = await db(selectors.message_get_failed)(
            conversation=self.conversation, pk=message_pk
        )
        if message is None:
            await self._stop(retry=True)  # a stalled reply: stop it, then send its message again
            return
        if await self._over_quota():
            return
        try:
            started = await actions.message_retry(
                conversation=self.conversation,
                message=message,
                sender=websink.sender_of(self.channel_name),
            )
        except (
            actions.ConversationReadOnly,
            actions.ApprovalPendingError,
            quotas.QuotaExceeded,
        ) as exc:
            await self.send(fragments.composer_error(str(exc)))
            return
        if not started:
            await self.send(fragments.composer_error(self._still_answering()))

    async def on_approval(self, frame: Frame) -> None:
        """The person's answer to an approval request: ``{"type": "approval", "approval": <id>,
        "decision": "approve"|"deny", "reason": "…"}``. Only the owner's is taken, once."""
        data = frame.data or {}
        decision = data.get("decision")
        reason = data.get("reason")
        if decision not in ("approve", "deny") or not isinstance(reason, str | None):
            await self.send(fragments.composer_error("That answer could not be read."))
            return
        if await self._over_quota():
            return
        try:
            await actions.approval_answer(
                conversation=self.conversation,
                user=self.scope["user"],
                approval_pk=_int(data.get("approval")),
                approve=decision == "approve",
                reason=reason or "",
                sender=websink.sender_of(self.channel_name),
            )
        except actions.ConversationBusy:
            await self.send(fragments.composer_error(self._still_answering()))
        except (
            actions.ApprovalRefused,
            actions.ConversationReadOnly,
            quotas.QuotaExceeded,
        ) as exc:
            await self.send(fragments.composer_error(str(exc)))

    async def _over_quota(self) -> bool:
        """Past the person's daily quota (conversations/usage.py): say so; nothing reaches Letta."""
        if not usage.quota().any:
            return False  # no quota: not even the hop to a database thread
        refusal = await db(usage.quota_refusal)(user=self.scope["user"])
        if refusal:
            await self.send(fragments.composer_error(refusal))
        return bool(refusal)

    def _still_answering(self) -> str:
        return (
            f"{self.conversation.agent.origin.name} is still answering. "
            "Your message is still in the box: send it when the reply is done."
        )

    async def _stop_waiting_for_resume(self) -> None:
        self.awaiting_resume = False
        pending, self.pending = self.pending or [], None
        for event in pending:
            await self.conversation_html(event)

    async def _resume(self, *, after: int, drafts: bool = False) -> None:
        """Bring this page up to date: what it missed, then the reply in progress, if any.

        Whatever was published before this point is covered by what the page gets now, so the
        events that waited are dropped.
        """
        self.awaiting_resume = False
        after = max([after, *self.shown])
        run = await db(selectors.run_active)(conversation=self.conversation)
        if run is None:
            stored = await db(selectors.message_list_after)(
                conversation=self.conversation, after_pk=after
            )
            self.shown.update(m.pk for m in stored)
            self.pending = None
            await self.send(
                fragments.catch_up(
                    stored, draft=None, status=fragments.idle_status(), drafts=drafts
                )
            )
            return
        # Events that arrive before the relay's snapshot wait, then only newer ones go out. Only
        # the answer to this request is taken: one to an earlier request would show twice.
        self.pending = []
        self.snapshot_from = run.relay_channel
        self.snapshot_request = uuid.uuid4().hex
        await relay.request_snapshot(
            run.relay_channel,
            reply_to=self.channel_name,
            after=after,
            drafts=drafts,
            request=self.snapshot_request,
        )
        self.takeover = asyncio.create_task(self._take_over_if_silent(run, after, drafts))

    async def _take_over_if_silent(self, run: Run, after: int, drafts: bool) -> None:
        """While the relay does not answer: take the run over once its relay is gone (its
        process died); a relay that is alive but slow (Letta hangs) answers in its own time."""
        while True:
            await asyncio.sleep(settings.LETTACHAT_RELAY_ANSWER_SECONDS)
            if self.pending is None:
                return
            # Shielded: a claim is never left half made (claimed, with no relay started).
            taken = await asyncio.shield(
                actions.reply_take_over(
                    conversation=self.conversation, run=run, stale_channel=self.snapshot_from
                )
            )
            if taken != "alive":
                break
        if taken == "taken":
            logger.info("relay of run %s was silent and gone; took it over", run.pk)
        await self._resume(after=after, drafts=drafts)  # from the relay that follows it now

    async def _stop(self, *, retry: bool) -> None:
        run = await actions.reply_stop(conversation=self.conversation, retry=retry)
        if run is None:
            await self.send(fragments.idle_status())

    # Events from the conversation's group, and snapshots for this socket ---------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # The relay's fragments touch no database: deliver them without the hop to a database
        # thread (``aclose_old_connections``) that channels makes before every event. A token
        # is such an event, so under load that hop was most of the cost of relaying it. Nor
        # does a frame from the page need it: whatever it reads or writes goes through
        # ``lettachat.aio.db``, whose threads close their own connections; the hop (to asgiref's
        # one shared thread) only delayed every message on its way to Letta.
        if message["type"] == websink.EVENT_TYPE:
            await self.conversation_html(message)
        elif message["type"] == websink.SNAPSHOT_TYPE:
            await self.conversation_snapshot(message)
        elif message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def session_ended(self, event: dict[str, Any]) -> None:
        await sessions.on_event(self, event)

    async def conversation_html(self, event: dict[str, Any]) -> None:
        if self.pending is not None:
            self.pending.append(event)
            return
        relay_channel, tick = self.watermark
        if event.get("relay") and event["relay"] == relay_channel and event.get("tick", 0) <= tick:
            return  # already in the snapshot this page got
        pks = event.get("pks") or []
        if event.get("adds") and pks and set(pks) <= self.shown:
            return  # a catch-up gave the page this message already
        self.shown.update(pks)
        await self.send(text_data=event["html"])

    async def conversation_snapshot(self, event: dict[str, Any]) -> None:
        if self.pending is None or event.get("request") != self.snapshot_request:
            return  # the answer to an earlier request: the page has what it holds, or will
        if self.takeover is not None:
            self.takeover.cancel()
            self.takeover = None
        pending, self.pending = self.pending or [], None
        self.watermark = (event["relay"], event["tick"])
        self.shown.update(event.get("pks") or [])
        await self.send(text_data=event["html"])
        for queued in pending:
            await self.conversation_html(queued)


@dataclass(frozen=True)
class Frame:
    text: str | None
    bytes_data: bytes | None
    data: dict[str, Any] | None  # the frame as a JSON object, if it is one


Handler = Callable[[ConversationConsumer, Frame], Awaitable[None]]
HANDLERS: dict[FrameKind, Handler] = {
    "message": ConversationConsumer.on_message,
    "resume": ConversationConsumer.on_resume,
    "stop": ConversationConsumer.on_stop,
    "retry": ConversationConsumer.on_retry,
    "approval": ConversationConsumer.on_approval,
}
