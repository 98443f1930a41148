"""Reads that are not about one page: what the terminal's /list counts."""

from __future__ import annotations

from django.utils import timezone

from conversations import selectors
from conversations.models import Message


def test_message_counts_are_per_conversation_without_system_messages(
    make_conversation, user, other_user, django_assert_num_queries
):
    busy, empty, theirs = (
        make_conversation(user),
        make_conversation(user),
        make_conversation(other_user),
    )
    now = timezone.now()
    for kind in ("system", "user", "assistant", "tool_call", "tool_return", "error"):
        Message.objects.create(conversation=busy, message_type=kind, content=kind, created_at=now)
    Message.objects.create(conversation=theirs, message_type="user", content="x", created_at=now)

    with django_assert_num_queries(1):
        counts = selectors.conversation_message_counts(conversations=[busy, empty])
    assert counts == {busy.pk: 5}  # none: not there (0 to whoever reads it)
    assert selectors.conversation_message_counts(conversations=[]) == {}
