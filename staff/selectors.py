"""What staff read. Not scoped to a person (staff see everyone's, within their admin permissions);
every read of a conversation's messages is recorded by the view that shows it (staff/audit.py).
"""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from conversations import selectors
from conversations.models import Conversation, Message

TRANSCRIPT_PAGE_SIZE = 100


def conversation_list_annotated(rows: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Conversations with ``message_count``: a subquery per row shown (msg_thread_idx), not a
    join and GROUP BY over every message."""
    count = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .exclude(message_type=Message.Type.SYSTEM)
        .order_by()
        .values("conversation")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return rows.annotate(
        message_count=Coalesce(Subquery(count, output_field=IntegerField()), 0)
    ).select_related("agent", "owner")


def transcript_page(*, conversation: Conversation, number: str | None) -> Page[Message]:
    """One page of the thread, oldest first, as the chat page shows it (system messages left
    out; each finished turn with its usage line). Three queries whatever the thread's length:
    the count, the page, the page's runs. An out-of-range or malformed ``number`` gives the
    nearest page (Django's ``get_page``)."""
    rows = (
        Message.objects.filter(conversation=conversation)
        .exclude(message_type=Message.Type.SYSTEM)
        .order_by("created_at", "id")
    )
    page = Paginator(rows, TRANSCRIPT_PAGE_SIZE).get_page(number)
    messages = list(page.object_list)
    selectors.message_list_attach_usage(
        conversation=conversation, messages=messages, last_run_complete=not page.has_next()
    )
    page.object_list = messages
    return page
