"""The web sink: conversation events as page fragments, for every tab on the conversation.

Each event becomes the page's own partials (``chat.fragments``), sent to the conversation's
channel group on the fragments layer (``lettachat.layers``), which reaches its sockets in every
server process; a snapshot goes to the one socket that asked, on the default layer. Channel-layer
messages carry plain strings and numbers: the HTML, and the relay and tick that let a socket drop
what a snapshot already gave it.
"""

from __future__ import annotations

from typing import Any

from chat import fragments
from conversations import events
from conversations.events import Event, Stamp
from conversations.models import Conversation
from conversations.relay.control import layer
from lettachat.layers import fragments_layer

SENDER_PREFIX = "ws:"  # a page's socket as the sender of a message: "ws:<its channel name>"
EVENT_TYPE = "conversation.html"  # -> the group (or one socket): {"html", "relay", "tick"}
SNAPSHOT_TYPE = "conversation.snapshot"  # -> one socket: {"html", "relay", "tick", "request"}


def sender_of(channel_name: str) -> str:
    """How a page's socket names itself as a message's sender."""
    return SENDER_PREFIX + channel_name


def group_name(conversation_pk: int) -> str:
    """The channel group of a conversation's sockets: derived from our key, never from input."""
    return f"conversation.{int(conversation_pk)}"


def status_html(status: events.ReplyStatus) -> str:
    if status.state == "answering":
        return fragments.reply_status(f"{status.agent_name} is answering…", busy=True)
    if status.state == "stalled":
        return fragments.reply_status(
            f"{status.agent_name} has not answered for {status.stalled_for:g} s.",
            busy=True,
            stalled=True,
        )
    if status.state == "stopping":
        return fragments.reply_status("Stopping…", busy=True)
    return fragments.reply_status("", busy=False, finished=status.finished)


def html_of(conversation: Conversation, event: Event) -> list[str]:
    """The fragments an event becomes (each one group message, in order)."""
    return [html for html, _, _ in fragments_of(conversation, event)]


def fragments_of(conversation: Conversation, event: Event) -> list[tuple[str, int, bool]]:
    """(fragment, the stored message it shows or 0, whether it adds that message to the page),
    for each group message of an event."""
    message = getattr(event, "message", None)
    pk = message.pk if message is not None and message.pk else 0
    adds = isinstance(event, events.MessageAdded | events.ApprovalRequested)
    return [(html, pk, adds) for html in _html(conversation, event)]


def _html(conversation: Conversation, event: Event) -> list[str]:
    match event:
        case events.ReplyStatus():
            return [status_html(event)]
        case events.ReplyFinished():
            return [fragments.reply_status("", busy=False, finished=True)]
        case events.Resync():
            # The new relay streams the reply's draft again from its start: drop the old one now.
            return [fragments.drafts_dropped() + fragments.resync_request()]
        case events.DraftStarted(draft=draft):
            return [fragments.stream_started(draft.stream_id, draft.kind, draft.text, draft.name)]
        case events.TextAppended(stream_id=stream_id, text=text, kind="assistant", so_far=so_far):
            return [fragments.reply_written(stream_id, so_far, before=len(so_far) - len(text))]
        case events.TextAppended(stream_id=stream_id, text=text):
            return [fragments.stream_token(stream_id, text)]
        case events.DraftStored(stream_id=stream_id, message=message):
            return [fragments.stream_finished(stream_id, message)]
        case events.MessageAdded(message=message):
            return [fragments.message_appended(message)]
        case events.MessageChanged(message=message):
            return [fragments.message_replaced(message)]
        case events.MemoryChanged(message=message, blocks=blocks, error=error):
            return [
                fragments.message_replaced(message)
                + fragments.memory_panel(conversation, blocks, error=error)
            ]
        case events.ApprovalRequested(approval=approval):
            return [fragments.message_appended(approval.message)]
        case events.ApprovalAnswered(approval=approval):
            # The card, answered (or pending again), in every tab: its buttons go.
            return [fragments.message_replaced(approval.message)]
        case events.UsageReported(usage=usage):
            return [fragments.turn_usage(usage)]
        case events.ConversationActive(conversation=active, retitled=retitled):
            title = [fragments.thread_title(active)] if retitled else []
            # Newest activity first: the thread's sidebar item goes to the top (with its title).
            return [*title, fragments.sidebar_item_moved_to_top(active)]
    raise TypeError(f"the web sink has no fragment for {type(event).__name__}")


class WebSink:
    async def emit(self, conversation: Conversation, event: Event, stamp: Stamp) -> None:
        if isinstance(event, events.Snapshot):
            await self._snapshot(event, stamp)
        elif isinstance(event, events.TextGivenBack):
            # Sent from a page: back into its box, unless the message offers Retry (one route).
            if event.sender.startswith(SENDER_PREFIX) and not event.retry_offered:
                html = fragments.composer(conversation, text=event.text)
                channel = event.sender.removeprefix(SENDER_PREFIX)
                await layer().send(channel, _message(EVENT_TYPE, html, events.NO_STAMP))
        else:
            for html, pk, adds in fragments_of(conversation, event):
                await fragments_layer().group_send(
                    group_name(conversation.pk),
                    _message(EVENT_TYPE, html, stamp, [pk] if pk else [], adds=adds),
                )

    async def _snapshot(self, snapshot: events.Snapshot, stamp: Stamp) -> None:
        draft = snapshot.draft
        html = fragments.catch_up(
            snapshot.stored,
            draft=(draft.stream_id, draft.kind, draft.text, draft.name) if draft else None,
            status=status_html(snapshot.status),
            drafts=snapshot.drafts,
        )
        pks = [m.pk for m in snapshot.stored]
        message = _message(SNAPSHOT_TYPE, html, stamp, pks)
        message["request"] = snapshot.request
        await layer().send(snapshot.reply_to, message)


def _message(
    kind: str, html: str, stamp: Stamp, pks: list[int] | None = None, *, adds: bool = False
) -> dict[str, Any]:
    """A channel-layer message: the HTML, where it comes from (relay, tick), and the stored
    messages it shows (``pks``; ``adds``: as new ones), so a socket knows what its page has."""
    return {
        "type": kind,
        "html": html,
        "relay": stamp.relay,
        "tick": stamp.tick,
        "pks": pks or [],
        "adds": adds,
    }
