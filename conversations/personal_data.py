"""A person's data as a whole: what lettachat holds of them, and erasing it.

Erasing goes through Letta first: a conversation or agent is deleted here only once Letta has
deleted it (or no longer knows it). So an erase that stops half-way (Letta down, time up) leaves
nothing here that still exists in Letta, says what is left, and the next run finishes the job.

What cannot be erased this way is said plainly: what the person told a *shared* agent may be in
that agent's memory blocks, which belong to everyone who uses it (staff can edit or clear them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.db.models import Count

from conversations.models import Agent, Conversation
from letta_gateway import Gateway, LettaError, LettaNotFound

logger = logging.getLogger(__name__)

ERASE_CONFIRMATION = "delete my data"


def identity_key(user: User) -> str:
    """The Letta identity that names a person on their personal agents.

    Stable for the person (their pk and the second their account was made), and unique to them
    among every database that uses the same Letta server: a pk alone is reused by another
    installation, a staging copy or a database made again, whose person would then be named on
    this person's identity (and erased with it).
    """
    return f"lettachat-user-{user.pk}-{int(user.date_joined.timestamp())}"


@dataclass(frozen=True, slots=True)
class AgentUse:
    name: str
    conversations: int


@dataclass(frozen=True, slots=True)
class DataSummary:
    conversations: int
    personal_agents: list[AgentUse]
    shared_agents: list[AgentUse]


def data_summary(*, user: User) -> dict[str, object]:
    """What lettachat holds of ``user``, for the "Your data" page."""
    counts = (
        Conversation.objects.filter(owner=user)
        .values("agent__name", "agent__template__name", "agent__template_id")
        .annotate(n=Count("pk"))
        .order_by("agent__name")
    )
    personal, shared = [], []
    total = 0
    for row in counts:
        total += row["n"]
        if row["agent__template_id"] is not None:
            personal.append(AgentUse(row["agent__template__name"], row["n"]))
        else:  # a shared agent, or one made personal since: shared while these ran
            shared.append(AgentUse(row["agent__name"], row["n"]))
    return {
        "summary": DataSummary(total, personal, shared),
        "personal_agent_count": Agent.objects.filter(owner=user).count(),
        "erase_confirmation": ERASE_CONFIRMATION,
    }


@dataclass
class EraseReport:
    conversations_deleted: int = 0
    agents_deleted: int = 0
    identity_deleted: bool = False
    conversations_left: list[str] = field(default_factory=list)
    agents_left: list[str] = field(default_factory=list)
    # Shared agents the person talked to: their memory may hold what the person said.
    shared_agents: list[str] = field(default_factory=list)
    error: str = ""
    out_of_time: bool = False

    @property
    def done(self) -> bool:
        return not (self.conversations_left or self.agents_left or self.error or self.out_of_time)


Progress = Callable[[str, str], None]  # (what was deleted: "conversation"/"agent", its Letta id)


def user_erase(
    *,
    gateway: Gateway,
    user: User,
    on_progress: Progress | None = None,
    deadline: float | None = None,
) -> EraseReport:
    """Delete everything of ``user`` in Letta and in the mirror, as far as it gets.

    Conversations first (each in Letta, then here), then the person's own agents, then their
    Letta identity. Stops at the first Letta failure, or at ``deadline`` (``time.monotonic()``),
    and says what is left; run it again to finish. The account itself stays.
    """
    report = EraseReport(
        shared_agents=sorted(
            set(
                Conversation.objects.filter(owner=user, agent__template__isnull=True).values_list(
                    "agent__name", flat=True
                )
            )
        )
    )

    def stop_now() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            report.out_of_time = True
        return report.out_of_time or bool(report.error)

    for conversation in Conversation.objects.filter(owner=user).order_by("pk"):
        if stop_now():
            break
        try:
            gateway.delete_conversation(conversation_id=conversation.letta_id)
        except LettaNotFound:
            pass  # gone from Letta already
        except LettaError as exc:
            report.error = str(exc)
            break
        conversation.delete()
        report.conversations_deleted += 1
        if on_progress is not None:
            on_progress("conversation", conversation.letta_id)

    for agent in Agent.objects.filter(owner=user).select_related("template").order_by("pk"):
        if stop_now():
            break
        if agent.conversations.exists():  # someone else's conversation on it cannot be: wait
            report.agents_left.append(agent.letta_id)
            continue
        template = agent.template
        common = frozenset((template.common_blocks or {}).values()) if template else frozenset()
        try:
            gateway.delete_agent(agent_id=agent.letta_id, keep_block_ids=common)
        except LettaNotFound:
            pass
        except LettaError as exc:
            report.error = str(exc)
            break
        agent.delete()
        report.agents_deleted += 1
        if on_progress is not None:
            on_progress("agent", agent.letta_id)

    if not stop_now() and not Agent.objects.filter(owner=user).exists():
        try:
            gateway.delete_identity(identifier_key=identity_key(user))
            report.identity_deleted = True
        except LettaNotFound:
            report.identity_deleted = True
        except LettaError as exc:
            report.error = str(exc)

    report.conversations_left = list(
        Conversation.objects.filter(owner=user).values_list("letta_id", flat=True)
    )
    report.agents_left = list(Agent.objects.filter(owner=user).values_list("letta_id", flat=True))
    if report.error:
        logger.warning("erasing the data of user %s stopped: %s", user.pk, report.error)
    return report
