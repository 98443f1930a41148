"""HTML fragments for the websocket: the page's own partials, marked for out-of-band swaps.

Every fragment's top-level element carries an ``id`` or ``hx-swap-oob``; every piece of text goes
through Django's escaping (templates, ``format_html``) or the markdown sanitiser.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

from chat import rendering
from conversations.models import Conversation, Message
from conversations.selectors import TurnUsage
from letta_gateway import MemoryBlockInfo

PAGE = "chat/chat.html"


def message_appended(message: Message) -> str:
    return format_html('<div hx-swap-oob="beforeend:#messages">{}</div>', stored_message(message))


# A stored message's article, and a sidebar's conversation item, are drawn again for every page
# that shows them, and the same fields give the same HTML: each process keeps the last
# PARTIALS_KEPT, by every field the partial reads (so an edit, a new error line, a usage line or a
# new title gives a new one; nothing is ever stale). Approval cards are drawn each time: they show
# the approval's state, kept in another table. Long messages are not kept, as in chat.rendering.
PARTIALS_KEPT = 4096


def stored_message(message: Message) -> SafeString:
    """The thread's article for a stored message (the page's ``message`` partial)."""
    context = {"message": message}
    if message.message_type == Message.Type.APPROVAL or (
        len(message.content) > rendering.KEPT_UP_TO_CHARS
    ):
        return render_to_string(f"{PAGE}#message", context)
    fields = (
        message.pk,
        message.message_type,
        message.content,
        message.error,
        message.name,
        message.created_at,
        repr(message.memory_change),
        getattr(message, "turn_usage", None),  # attached by the selectors
    )
    return _kept(_Partial("message", fields, context))


def sidebar_item(conversation: Conversation, *, current: bool, oob: bool = False) -> SafeString:
    """A conversation's item in the sidebar (the page's ``conversation-item`` partial)."""
    context = {"c": conversation, "is_current": current, "item_oob": oob}
    fields = (conversation.pk, conversation.letta_id, conversation.title, current, oob)
    return _kept(_Partial("conversation-item", fields, context))


class _Partial:
    """A partial to draw, compared by its name and the fields it shows."""

    __slots__ = ("context", "key")

    def __init__(self, name: str, fields: tuple[object, ...], context: dict[str, object]) -> None:
        self.key = (name, fields)
        self.context: dict[str, object] | None = context

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Partial) and self.key == other.key


@lru_cache(maxsize=PARTIALS_KEPT)
def _kept(partial: _Partial) -> SafeString:
    context, partial.context = partial.context, None  # the cache keeps the fields, not the rows
    assert context is not None
    return render_to_string(f"{PAGE}#{partial.key[0]}", context)


def message_replaced(message: Message) -> str:
    """The message's final form, replacing whatever stood for it (its streamed draft included)."""
    return render_to_string(f"{PAGE}#message", {"message": message, "oob": "outerHTML"})


def stream_finished(stream_id: str, message: Message) -> str:
    """Swap the streamed draft ``stream-<id>`` for the stored, rendered message."""
    return render_to_string(
        f"{PAGE}#message", {"message": message, "oob": f"outerHTML:#stream-{stream_id}"}
    )


def _draft(stream_id: str, kind: str, text: str, name: str) -> dict[str, object]:
    """The context of a draft's partial; a reply's text formatted in its two parts (see
    ``reply_written``)."""
    context: dict[str, object] = {"stream_id": stream_id, "kind": kind, "text": text, "name": name}
    if kind == "assistant":
        context["done"], context["being_written"] = rendering.render_streaming(text)
    return context


def stream_started(stream_id: str, kind: str, text: str, name: str = "") -> str:
    return render_to_string(f"{PAGE}#streaming-message", _draft(stream_id, kind, text, name))


def reply_written(stream_id: str, so_far: str, *, before: int) -> str:
    """A reply's draft, formatted as it streams (``chat.rendering``): the blocks finished since
    the text ended at ``before`` join ``stream-<id>-done``; ``stream-<id>-open`` shows the block
    being written."""
    start = rendering.streaming_cut(so_far[:before])
    done, being_written = rendering.render_streaming(so_far, start)
    parts = []
    if done:
        parts.append(
            format_html('<div hx-swap-oob="beforeend:#stream-{}-done">{}</div>', stream_id, done)
        )
    parts.append(
        format_html(
            '<div hx-swap-oob="innerHTML:#stream-{}-open">{}</div>', stream_id, being_written
        )
    )
    return "".join(parts)


def stream_token(stream_id: str, text: str) -> str:
    return format_html('<span hx-swap-oob="beforeend:#stream-{}-text">{}</span>', stream_id, text)


def reply_status(text: str, *, busy: bool, stalled: bool = False, finished: bool = False) -> str:
    """The line under the thread: who is answering, with Stop (and Retry when stalled).

    ``finished``: a reply has just ended; the line says so to screen readers (once, not per token).
    """
    return render_to_string(
        f"{PAGE}#reply-status",
        {
            "status_text": text,
            "busy": busy,
            "stalled": stalled,
            "finished": finished,
            "oob": True,
        },
    )


def resync_request() -> str:
    """Tell the page to catch up again (static/js/chat.js sends "resume" when this arrives)."""
    return format_html(
        '<div id="reply-resync" hx-swap-oob="true" hidden data-at="{}"></div>', uuid.uuid4().hex
    )


def idle_status() -> str:
    return reply_status("", busy=False)


def drafts_dropped() -> str:
    """Remove the drafts being streamed (what follows shows them again, whole)."""
    return '<div hx-swap-oob="delete:#messages .msg-streaming"></div>'


def catch_up(
    stored: list[Message],
    *,
    draft: tuple[str, str, str, str] | None,
    status: str,
    drafts: bool = False,
) -> str:
    """Bring a page up to date: drop its stale drafts (if it has any), add what it missed, then
    the live draft."""
    parts = [drafts_dropped()] if drafts else []
    inner = SafeString()
    for message in stored:
        inner += stored_message(message)
    if draft is not None:
        stream_id, kind, text, name = draft
        inner += render_to_string(f"{PAGE}#streaming-article", _draft(stream_id, kind, text, name))
    if inner:
        parts.append(format_html('<div hx-swap-oob="beforeend:#messages">{}</div>', inner))
    parts.append(status)
    return "".join(parts)


def composer(conversation: Conversation, *, text: str = "", error: str = "") -> str:
    return render_to_string(
        f"{PAGE}#composer",
        {
            "otid": uuid.uuid4(),
            "conversation": conversation,
            "composer_text": text,
            "composer_error": error,
            "max_chars": settings.LETTACHAT_MAX_MESSAGE_CHARS,
            "oob": True,
        },
    )


def composer_error(error: str) -> str:
    """Only the error line: whatever is in the message box stays there."""
    return format_html(
        '<p id="composer-error" class="composer-error" role="alert" hx-swap-oob="true">{}</p>',
        error,
    )


def thread_title(conversation: Conversation) -> str:
    return format_html(
        '<h1 id="thread-title" class="thread-title" hx-swap-oob="true">{}</h1>', conversation.title
    )


def sidebar_item_moved_to_top(conversation: Conversation) -> str:
    """Move the conversation's sidebar item to the top of its list (it has a new message).

    For the sockets of the conversation's own thread, so the item is marked as the current one.
    Its old place is dropped wherever it was; it goes to the top of the list it belongs in.
    """
    item = sidebar_item(conversation, current=True)
    target = "#archived-list" if conversation.archived else "#conversation-list"
    return format_html(
        '<li id="conv-{}" hx-swap-oob="delete"></li><div hx-swap-oob="afterbegin:{}">{}</div>',
        conversation.letta_id,
        target,
        item,
    )


# --- Rich messages: per-turn usage, the memory panel ---------------------------------------------


def turn_usage(usage: TurnUsage) -> str:
    """The line under a finished turn (tokens, an abnormal stop), appended to the thread."""
    inner = render_to_string(f"{PAGE}#turn-usage", {"usage": usage})
    return format_html('<div hx-swap-oob="beforeend:#messages">{}</div>', inner)


def memory_panel(
    conversation: Conversation, blocks: list[MemoryBlockInfo] | None, *, error: str = ""
) -> str:
    """The agent's memory blocks, replacing the panel wherever the thread shows it."""
    return render_to_string(
        f"{PAGE}#memory-panel",
        {
            "conversation": conversation,
            "memory_loaded": True,
            "memory_blocks": blocks,
            "memory_error": error,
            "oob": True,
        },
    )
