"""An ``otid`` belongs to the conversation it was first sent in.

Letta 0.16.8 recognises a resent message by its ``otid`` alone, across all conversations: a
message sent with an ``otid`` that Letta has seen re-attaches to the run of that first message,
wherever it was, and streams that run's reply. So a frame carrying someone else's ``otid``
would show and store their reply in the sender's thread. Two checks stop it:

- **Before sending** (``otid_for_send``): an ``otid`` already recorded for a message of another
  conversation is replaced by a new one, so the message becomes a new turn of its own.
- **On the run Letta reports** (``run_is_of``): the first event of a reply names its run; a
  run that Letta says belongs to another conversation (or, when Letta cannot be asked, that
  lettachat recorded for another one) is not followed. Nothing of it is shown or stored; the
  message is marked not sent, its text handed back, and Retry sends it as a new turn (with a
  new ``otid``). This covers ``otid`` s lettachat never saw (runs started elsewhere) and two
  sends racing with one ``otid``.
"""

from __future__ import annotations

import logging
import uuid

from django.db.models import Case, When

from conversations.models import Conversation, Message, Run
from letta_gateway import Gateway, LettaError
from lettachat.aio import db

logger = logging.getLogger(__name__)

FOREIGN_RUN = (
    "Letta matched this message to a reply in another conversation, which is not shown here. "
    "Press Retry to send it as a new message."
)


# Names the otids made for messages whose own otid another conversation had (uuid5).
_NAMESPACE = uuid.UUID("5d0f6c1e-2b8e-4c57-9a53-0c7f1d6f3b21")


def message_for_send(*, conversation: Conversation, otid: str) -> tuple[str, Message | None]:
    """The ``otid`` to send with (``otid_for_send``), and this conversation's message already
    recorded with it (a resend), if there is one: in one query, unless another conversation
    has the ``otid`` (rare)."""
    found = list(
        Message.objects.filter(message_type=Message.Type.USER, otid=otid)
        .annotate(elsewhere=Case(When(conversation=conversation, then=0), default=1))
        .order_by("elsewhere")[:2]
    )
    if any(m.conversation_id != conversation.pk for m in found):
        otid = otid_for_send(conversation=conversation, otid=otid)
        existing = Message.objects.filter(
            conversation=conversation, message_type=Message.Type.USER, otid=otid
        ).first()
        return otid, existing
    return otid, found[0] if found else None


def _taken_elsewhere(conversation: Conversation, otid: str) -> bool:
    return (
        Message.objects.filter(message_type=Message.Type.USER, otid=otid)
        .exclude(conversation=conversation)
        .exists()
    )


def otid_for_send(*, conversation: Conversation, otid: str) -> str:
    """``otid``, or another if a message of another conversation was sent with it.

    The other one is derived from this conversation and ``otid``, so the same frame resent
    (after a lost connection) is still recognised as the same message.
    """
    if not _taken_elsewhere(conversation, otid):
        return otid
    derived = str(uuid.uuid5(_NAMESPACE, f"{conversation.letta_id}/{otid}"))
    return str(uuid.uuid4()) if _taken_elsewhere(conversation, derived) else derived


def _recorded_elsewhere(conversation: Conversation, run_id: str) -> bool:
    return Run.objects.filter(letta_run_id=run_id).exclude(conversation=conversation).exists()


async def run_is_of(*, conversation: Conversation, run_id: str, gateway: Gateway) -> bool:
    """Whether the Letta run ``run_id`` is one of ``conversation``'s, as Letta says.

    If Letta cannot be asked, lettachat's own record decides: a run it recorded for another
    conversation is not this one's.
    """
    try:
        owner = await gateway.arun_conversation(run_id=run_id)
    except LettaError as exc:
        logger.warning("could not look up run %s: %s", run_id, exc)
        return not await db(_recorded_elsewhere)(conversation, run_id)
    return owner is None or owner == conversation.letta_id
