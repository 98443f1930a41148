"""Writes. Each function does one thing to the mirror (and to Letta where it must)."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations.letta_gateway import Gateway, MessageInfo
from conversations.models import Agent, Conversation, Message

logger = logging.getLogger(__name__)

DEMO_AGENT_NAME = "lettachat demo"
DEMO_BLOCKS = {
    "human": "The person chatting through lettachat. Nothing else is known about them yet.",
    "persona": (
        "I am the lettachat demo agent. I run on a small offline model that echoes what it is "
        "told, so the whole app can be tried with no keys and no network."
    ),
}
TITLE_CHARS = 60


def agent_sync(*, gateway: Gateway) -> list[Agent]:
    """Pull every agent from Letta into the mirror (visibility stays as staff set it)."""
    now = timezone.now()
    agents = []
    for info in gateway.list_agents():
        agent, _ = Agent.objects.update_or_create(
            letta_id=info.letta_id,
            defaults={
                "name": info.name,
                "description": info.description,
                "model": info.model,
                "synced_at": now,
            },
        )
        agents.append(agent)
    return agents


def agent_ensure_demo(*, gateway: Gateway, model: str) -> Agent | None:
    """On a fresh local server: make a demo agent visible to users if none is.

    Returns the demo agent when it had to be made visible (or created), otherwise None.
    """
    agent_sync(gateway=gateway)
    if Agent.objects.filter(visible_to_users=True).exists():
        return None
    agent = Agent.objects.filter(name=DEMO_AGENT_NAME).first()
    if agent is None:
        info = gateway.create_agent(
            name=DEMO_AGENT_NAME,
            model=model,
            description="A demo agent on the offline model.",
            blocks=DEMO_BLOCKS,
        )
        agent = Agent.objects.create(
            letta_id=info.letta_id,
            name=info.name,
            description=info.description,
            model=info.model,
            synced_at=timezone.now(),
        )
    agent.visible_to_users = True
    agent.save(update_fields=["visible_to_users"])
    return agent


def conversation_create(*, gateway: Gateway, user: AbstractBaseUser, agent: Agent) -> Conversation:
    """Start a new Letta conversation on ``agent``, owned by ``user``."""
    info = gateway.create_conversation(agent_id=agent.letta_id)
    now = timezone.now()
    return Conversation.objects.create(
        letta_id=info.letta_id,
        agent=agent,
        owner=user,
        summary=info.summary[:200],
        last_message_at=now,
    )


def message_create_user(*, conversation: Conversation, text: str, otid: str) -> Message:
    """Record what the person sent, before Letta has it; the first message titles the thread."""
    now = timezone.now()
    with transaction.atomic():
        message = Message.objects.create(
            conversation=conversation,
            otid=otid,
            message_type=Message.Type.USER,
            content=text,
            created_at=now,
        )
        fields = {"last_message_at": now}
        if not conversation.summary:
            fields["summary"] = _title_from(text)
        Conversation.objects.filter(pk=conversation.pk).update(**fields)
        for name, value in fields.items():
            setattr(conversation, name, value)
    return message


def message_mark_failed(*, message: Message, error: str) -> Message:
    message.error = error
    message.save(update_fields=["error"])
    return message


def message_record(
    *,
    conversation: Conversation,
    letta_id: str,
    message_type: str,
    content: str,
    name: str = "",
    run_id: str = "",
    error: str = "",
) -> Message:
    """Write one finished message of a reply (once per message, never per token)."""
    message, _ = Message.objects.update_or_create(
        letta_id=letta_id,
        message_type=message_type,
        defaults={
            "conversation": conversation,
            "message_type": message_type,
            "content": content,
            "name": name,
            "run_id": run_id,
            "error": error,
        },
        create_defaults={
            "conversation": conversation,
            "message_type": message_type,
            "content": content,
            "name": name,
            "run_id": run_id,
            "error": error,
            "created_at": timezone.now(),
        },
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=message.created_at)
    return message


def message_record_error(*, conversation: Conversation, text: str) -> Message:
    """A note in the thread that a reply failed or ended abnormally (lettachat's, not Letta's)."""
    return Message.objects.create(
        conversation=conversation,
        message_type=Message.Type.ERROR,
        content=text,
        created_at=timezone.now(),
    )


def message_reconcile(*, conversation: Conversation, infos: list[MessageInfo]) -> list[Message]:
    """Make the mirror agree with what Letta stored; returns the messages it had to add.

    A user message is matched by the ``otid`` we sent with it; others by Letta's id. Messages the
    stream did not show us (system messages aside) are added.
    """
    added = []
    for info in infos:
        if info.message_type == Message.Type.SYSTEM:
            continue
        if Message.objects.filter(letta_id=info.letta_id, message_type=info.message_type).exists():
            continue
        if info.otid:
            pending = Message.objects.filter(
                conversation=conversation, otid=info.otid, letta_id__isnull=True
            ).update(letta_id=info.letta_id, run_id=info.run_id, error="")
            if pending:
                continue
        message = Message.objects.create(
            conversation=conversation,
            letta_id=info.letta_id,
            otid=info.otid,
            message_type=info.message_type,
            content=info.content,
            name=info.name,
            run_id=info.run_id,
            # Letta's dates have whole seconds; arrival order is the order to show.
            created_at=timezone.now(),
        )
        added.append(message)
    return added


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"
