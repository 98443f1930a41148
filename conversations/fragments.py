"""HTML fragments for the websocket: the page's own partials, marked for out-of-band swaps.

Every fragment's top-level element carries an ``id`` or ``hx-swap-oob``; every piece of text goes
through Django's escaping (templates, ``format_html``) or the markdown sanitiser.
"""

from __future__ import annotations

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html

from conversations.models import Conversation, Message

PAGE = "conversations/chat.html"


def message_appended(message: Message) -> str:
    inner = render_to_string(f"{PAGE}#message", {"message": message})
    return format_html('<div hx-swap-oob="beforeend:#messages">{}</div>', inner)


def message_replaced(message: Message) -> str:
    """The message's final form, replacing whatever stood for it (its streamed draft included)."""
    return render_to_string(f"{PAGE}#message", {"message": message, "oob": True})


def stream_finished(stream_id: str, message: Message) -> str:
    """Swap the streamed draft ``stream-<id>`` for the stored, rendered message."""
    final = render_to_string(f"{PAGE}#message", {"message": message})
    return format_html('<div id="stream-{}" hx-swap-oob="outerHTML">{}</div>', stream_id, final)


def stream_started(stream_id: str, kind: str, text: str, name: str = "") -> str:
    return render_to_string(
        f"{PAGE}#streaming-message",
        {"stream_id": stream_id, "kind": kind, "text": text, "name": name},
    )


def stream_token(stream_id: str, text: str) -> str:
    return format_html('<span hx-swap-oob="beforeend:#stream-{}-text">{}</span>', stream_id, text)


def reply_status(text: str, *, busy: bool) -> str:
    return format_html(
        '<div id="reply-status" class="reply-status" role="status" aria-live="polite"'
        ' hx-swap-oob="true" data-busy="{}">{}</div>',
        "true" if busy else "false",
        text,
    )


def composer(conversation: Conversation, *, text: str = "", error: str = "") -> str:
    return render_to_string(
        f"{PAGE}#composer",
        {
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
    ) + render_to_string(
        f"{PAGE}#conversation-item",
        {"c": conversation, "conversation": conversation, "item_oob": True},
    )
