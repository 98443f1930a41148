"""A conversation's context window, as Letta tells it: for the thread's info panel.

Letta keeps a conversation's whole history, but the agent sees only the messages in its context
window (``conversations.retrieve``'s ``in_context_message_ids``). When the window fills, Letta
compacts: older messages leave the window, and a user message whose content is a JSON
``system_alert`` carrying a summary of them takes their place. The mirror keeps every message;
this says which of them the agent no longer sees, and where Letta compacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from conversations.models import Conversation, Message, Run
from letta_gateway import ConversationDetails, Gateway

# Letta 0.16.8's marker where it compacted: {"type": "system_alert", "message": "…", "time": …}.
SYSTEM_ALERT = "system_alert"


@dataclass(frozen=True, slots=True)
class ConversationContext:
    details: ConversationDetails
    context_window: int | None  # the agent's model's window, in tokens
    context_tokens: int | None  # what the last finished turn put in it
    # Mirror pks of the messages Letta has and the agent no longer sees (compacted away).
    left_context: tuple[int, ...]
    compactions: int  # markers of a compaction among the mirror's messages

    @property
    def in_context(self) -> int:
        """Messages in the context window now, the system prompt included."""
        return len(self.details.in_context_message_ids)

    @property
    def meter_high(self) -> int | None:
        """Where the context meter turns to a warning: Letta compacts when the window is full."""
        return int(self.context_window * 0.8) if self.context_window else None

    @property
    def context_percent(self) -> int | None:
        if not self.context_window or self.context_tokens is None:
            return None
        return min(100, round(100 * self.context_tokens / self.context_window))


def compaction_summary(content: str) -> str | None:
    """The summary in a compaction marker's content, or None if the content is not one."""
    if SYSTEM_ALERT not in content:
        return None  # cheap: nearly every message
    try:
        alert = json.loads(content)
    except ValueError:
        return None
    if not isinstance(alert, dict) or alert.get("type") != SYSTEM_ALERT:
        return None
    return str(alert.get("message") or "")


def conversation_context(*, gateway: Gateway, conversation: Conversation) -> ConversationContext:
    """Ask Letta about the conversation and its agent (two reads); raises ``LettaError``."""
    details = gateway.retrieve_conversation(conversation_id=conversation.letta_id)
    agent = gateway.retrieve_agent(agent_id=conversation.agent.letta_id)
    in_context = set(details.in_context_message_ids)
    stored = Message.objects.filter(conversation=conversation, letta_id__isnull=False)
    rows = list(stored.order_by("created_at", "pk").values_list("pk", "letta_id"))
    # Only what came before the newest message the agent sees can have left its context: a newer
    # one is not in Letta's history yet (a reply still running: Letta stores a step's messages
    # when the step ends; the mirror stores each as soon as it has streamed).
    newest_seen = max(
        (i for i, (_, letta_id) in enumerate(rows) if letta_id in in_context), default=0
    )
    left = tuple(pk for pk, letta_id in rows[:newest_seen] if letta_id not in in_context)
    markers = stored.filter(message_type=Message.Type.USER, content__contains=SYSTEM_ALERT)
    last_turn = (
        Run.objects.filter(conversation=conversation, context_tokens__isnull=False)
        .exclude(status=Run.Status.RUNNING)
        .order_by("-pk")
        .first()
    )
    return ConversationContext(
        details=details,
        context_window=agent.context_window,
        context_tokens=last_turn.context_tokens if last_turn else None,
        left_context=left,
        compactions=sum(
            compaction_summary(content) is not None
            for content in markers.values_list("content", flat=True)
        ),
    )
