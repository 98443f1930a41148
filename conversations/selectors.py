"""Reads. Every conversation read is scoped to the person asking."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from conversations.models import Agent, Conversation, Message

SIDEBAR_PAGE_SIZE = 50
THREAD_PAGE_SIZE = 100


def agent_list_visible() -> QuerySet[Agent]:
    return Agent.objects.filter(visible_to_users=True)


def agent_get_visible(*, letta_id: str) -> Agent | None:
    return agent_list_visible().filter(letta_id=letta_id).first()


def conversation_list(
    *, user: AbstractBaseUser | AnonymousUser, agent: Agent, limit: int = SIDEBAR_PAGE_SIZE
) -> list[Conversation]:
    """The person's conversations on an agent, most recent activity first."""
    if not user.is_authenticated:
        return []
    return list(
        Conversation.objects.filter(owner=user, agent=agent, archived=False).order_by(
            "-last_message_at", "-id"
        )[:limit]
    )


def conversation_get(
    *, user: AbstractBaseUser | AnonymousUser, letta_id: str
) -> Conversation | None:
    """The conversation if it belongs to ``user`` and its agent is visible; otherwise None."""
    if not user.is_authenticated:
        return None
    return (
        Conversation.objects.select_related("agent")
        .filter(owner=user, letta_id=letta_id, agent__visible_to_users=True)
        .first()
    )


def message_list_recent(
    *, conversation: Conversation, limit: int = THREAD_PAGE_SIZE
) -> list[Message]:
    """The last ``limit`` shown messages of a thread, oldest first."""
    recent = (
        Message.objects.filter(conversation=conversation)
        .exclude(message_type=Message.Type.SYSTEM)
        .order_by("-created_at", "-id")[:limit]
    )
    return list(reversed(recent))


def message_last_letta_id(*, conversation: Conversation) -> str | None:
    """The newest message Letta has confirmed: the cursor to read what came after it."""
    return (
        Message.objects.filter(conversation=conversation, letta_id__isnull=False)
        .order_by("-created_at", "-id")
        .values_list("letta_id", flat=True)
        .first()
    )
