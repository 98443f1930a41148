"""Writes. Each function does one thing to the mirror (and to Letta where it must)."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from conversations.models import Agent, Conversation, Message, Run
from letta_gateway import Gateway, LettaError, LettaNotFound, MessageInfo

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


class ConversationBusy(Exception):
    """The conversation's agent is still answering: a new message must wait."""


def message_send(
    *, conversation: Conversation, text: str, otid: str, relay_channel: str = ""
) -> tuple[Message, Run | None]:
    """Record what the person sent and open a run for it; the first message titles the thread.

    ``relay_channel``: the channel of the relay that will follow the run, recorded with it.
    Idempotent: a message whose ``otid`` is already recorded is not recorded again (the run is
    then None). Raises ``ConversationBusy`` while another run of the conversation is running.
    """
    existing = Message.objects.filter(
        conversation=conversation, message_type=Message.Type.USER, otid=otid
    ).first()
    if existing is not None:
        return existing, None
    now = timezone.now()
    try:
        with transaction.atomic():
            message = Message.objects.create(
                conversation=conversation,
                otid=otid,
                message_type=Message.Type.USER,
                content=text,
                created_at=now,
            )
            run = Run.objects.create(
                conversation=conversation, user_message=message, relay_channel=relay_channel
            )
    except IntegrityError as exc:
        if Run.objects.filter(conversation=conversation, status=Run.Status.RUNNING).exists():
            raise ConversationBusy from exc
        # The same otid, sent twice at once: the other send recorded it.
        return Message.objects.get(
            conversation=conversation, message_type=Message.Type.USER, otid=otid
        ), None
    fields: dict[str, object] = {"last_message_at": now}
    if not conversation.summary:
        fields["summary"] = _title_from(text)
    Conversation.objects.filter(pk=conversation.pk).update(**fields)
    for name, value in fields.items():
        setattr(conversation, name, value)
    return message, run


def message_resend(*, conversation: Conversation, message: Message) -> tuple[Message, Run]:
    """Send a message that failed again, as a new turn (a new otid, so Letta does not replay)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                run = Run.objects.create(conversation=conversation, user_message=message)
        except IntegrityError as exc:
            raise ConversationBusy from exc
        message.otid = str(uuid.uuid4())
        message.error = ""
        message.save(update_fields=["otid", "error"])
    return message, run


def run_set_relay(*, run: Run, channel: str) -> None:
    run.relay_channel = channel
    Run.objects.filter(pk=run.pk).update(relay_channel=channel)


def run_claim(*, run: Run, stale_channel: str) -> bool:
    """Take over a run whose relay is gone; only one taker wins."""
    claimed = Run.objects.filter(
        pk=run.pk, status=Run.Status.RUNNING, relay_channel=stale_channel
    ).update(relay_channel=f"claimed.{uuid.uuid4().hex}")
    if claimed:
        run.refresh_from_db()
    return bool(claimed)


def run_started(*, run: Run, letta_run_id: str) -> None:
    run.letta_run_id = letta_run_id
    Run.objects.filter(pk=run.pk).update(letta_run_id=letta_run_id)


def run_stored_until(*, run: Run, seq_id: int) -> None:
    """Letta's stream position of the last stored message: where a new relay resumes."""
    run.last_seq_id = seq_id
    Run.objects.filter(pk=run.pk).update(last_seq_id=seq_id)


def run_finish(*, run: Run, status: str, error: str = "") -> None:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    run.save(
        update_fields=[
            "status", "error", "finished_at", "stop_reason", "letta_run_id", "prompt_tokens",
            "completion_tokens", "total_tokens", "context_tokens",
        ]
    )  # fmt: skip


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
    run: Run | None = None,
    seq_id: int | None = None,
) -> Message:
    """Write one finished message of a reply (once per message, never per token).

    With ``run`` and ``seq_id``: the message's position in Letta's stream is stored with it, in
    the same transaction (``run_stored_until``), so a relay that takes over resumes after it.
    """
    fields = {"content": content, "name": name, "run_id": run_id, "error": error}
    with transaction.atomic():
        message, _ = Message.objects.update_or_create(
            conversation=conversation,
            letta_id=letta_id,
            message_type=message_type,
            defaults=fields,
            create_defaults={**fields, "created_at": timezone.now()},
        )
        Conversation.objects.filter(pk=conversation.pk).update(last_message_at=message.created_at)
        if run is not None and seq_id is not None:
            run_stored_until(run=run, seq_id=seq_id)
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
        if Message.objects.filter(
            conversation=conversation, letta_id=info.letta_id, message_type=info.message_type
        ).exists():
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


# --- Threads: rename, archive, delete, fork -------------------------------------------------------

SUMMARY_CHARS = 200
FORK_PAGE = 100
# What lettachat has learnt about the Letta server: does a fork honour its ``message_id``?
FORK_POINT_CACHE_KEY = "lettachat:letta-fork-point-supported"
FORK_POINT_CACHE_SECONDS = 24 * 3600
# Letta servers before 0.17 (0.16.8 is the last server on PyPI) ignore a fork's message_id.
FORK_POINT_IGNORED_BEFORE = (0, 17)
FORK_POINT_UNSUPPORTED = (
    "This Letta server cannot fork a conversation at a message: it always copies the whole "
    "conversation."
)


class ForkPointIgnored(Exception):
    """Letta copied the whole conversation instead of forking it at the message asked for."""

    def __init__(self) -> None:
        super().__init__(f"{FORK_POINT_UNSUPPORTED} Nothing was forked.")


def conversation_rename(
    *, gateway: Gateway, conversation: Conversation, summary: str
) -> Conversation:
    """Retitle a conversation: its ``summary`` in Letta, then in the mirror.

    Raises ``ValidationError`` for an empty title, ``LettaError`` if Letta refuses (the mirror is
    then unchanged).
    """
    summary = " ".join(summary.split())
    if not summary:
        raise ValidationError("A title cannot be empty.")
    if len(summary) > SUMMARY_CHARS:
        raise ValidationError(f"A title can have at most {SUMMARY_CHARS} characters.")
    gateway.update_conversation(conversation_id=conversation.letta_id, summary=summary)
    conversation.summary = summary
    Conversation.objects.filter(pk=conversation.pk).update(summary=summary)
    return conversation


def conversation_set_archived(*, conversation: Conversation, archived: bool) -> Conversation:
    """Archive or unarchive: lettachat's own state (Letta 0.16.8 ignores ``archived``)."""
    conversation.archived = archived
    Conversation.objects.filter(pk=conversation.pk).update(archived=archived)
    return conversation


def conversation_delete(*, gateway: Gateway, conversation: Conversation) -> None:
    """Delete in Letta, then in the mirror; a conversation Letta no longer knows goes too.

    Any other Letta error is raised and the mirror keeps the conversation.
    """
    try:
        gateway.delete_conversation(conversation_id=conversation.letta_id)
    except LettaNotFound:
        logger.info("%s was already gone from Letta; deleting the mirror", conversation.letta_id)
    conversation.delete()


def conversation_fork(
    *,
    gateway: Gateway,
    user: AbstractBaseUser,
    conversation: Conversation,
    at_message: Message | None = None,
) -> Conversation:
    """Copy ``conversation`` (up to and including ``at_message`` if given) into a new one.

    The fork's mirror is read back from Letta, so it holds what Letta holds. When Letta ignores
    the fork point (0.16.8 does), the copy is deleted again and ``ForkPointIgnored`` raised.
    """
    if at_message is not None and (
        at_message.conversation_id != conversation.pk or not at_message.letta_id
    ):
        raise ValueError("A fork point must be a message of the conversation that Letta holds.")
    info = gateway.fork_conversation(
        conversation_id=conversation.letta_id,
        message_id=at_message.letta_id if at_message else None,
    )
    try:
        infos = _read_all_messages(gateway, info.letta_id)
    except LettaError:
        _forget_fork(gateway, info.letta_id)
        raise
    if at_message is not None:
        honoured = bool(infos) and infos[-1].letta_id == at_message.letta_id
        if not honoured:
            cache.set(FORK_POINT_CACHE_KEY, False, FORK_POINT_CACHE_SECONDS)
            _forget_fork(gateway, info.letta_id)
            raise ForkPointIgnored()
        if _has_later_letta_messages(at_message):  # otherwise a whole copy looks the same
            cache.set(FORK_POINT_CACHE_KEY, True, FORK_POINT_CACHE_SECONDS)
    return _mirror_fork(
        info_id=info.letta_id,
        user=user,
        origin=conversation,
        at_message=at_message,
        infos=infos,
    )


def conversation_fork_point_supported(*, gateway: Gateway) -> bool | None:
    """Whether Letta forks at a message (True), copies everything instead (False), or unknown.

    Learnt from forks made at a message; before any, judged from the server's version.
    """
    known = cache.get(FORK_POINT_CACHE_KEY)
    if known is not None:
        return bool(known)
    try:
        version = gateway.health()
    except LettaError:
        return None
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if len(numbers) == 2 and numbers < FORK_POINT_IGNORED_BEFORE:
        cache.set(FORK_POINT_CACHE_KEY, False, FORK_POINT_CACHE_SECONDS)
        return False
    return None


def conversation_fork_point_known() -> bool | None:
    """What is known without asking Letta (for rendering a page)."""
    known = cache.get(FORK_POINT_CACHE_KEY)
    return None if known is None else bool(known)


def _read_all_messages(gateway: Gateway, conversation_id: str) -> list[MessageInfo]:
    """Every message Letta holds for the conversation, oldest first, read in cursor pages."""
    infos: list[MessageInfo] = []
    after: str | None = None
    while True:
        page = gateway.list_messages(conversation_id=conversation_id, after=after, limit=FORK_PAGE)
        infos.extend(page)
        if len(page) < FORK_PAGE or page[-1].letta_id == after:
            break
        after = page[-1].letta_id
    seen: set[tuple[str, str]] = set()
    unique = []
    for info in infos:
        key = (info.letta_id, info.message_type)
        if info.message_type != Message.Type.SYSTEM and key not in seen:
            seen.add(key)
            unique.append(info)
    return unique


def _forget_fork(gateway: Gateway, conversation_id: str) -> None:
    try:
        gateway.delete_conversation(conversation_id=conversation_id)
    except LettaError as exc:
        logger.warning("could not delete the unwanted fork %s: %s", conversation_id, exc)


def _has_later_letta_messages(message: Message) -> bool:
    return (
        Message.objects.filter(conversation_id=message.conversation_id, letta_id__isnull=False)
        .exclude(letta_id=message.letta_id)
        .filter(created_at__gte=message.created_at)
        .filter(Q(created_at__gt=message.created_at) | Q(pk__gt=message.pk))
        .exists()
    )


def _mirror_fork(
    *,
    info_id: str,
    user: AbstractBaseUser,
    origin: Conversation,
    at_message: Message | None,
    infos: list[MessageInfo],
) -> Conversation:
    # Shown at the origin's times where the origin has the message (Letta's have whole seconds).
    shown_at = {
        (letta_id, kind): at
        for letta_id, kind, at in Message.objects.filter(
            conversation=origin, letta_id__isnull=False
        ).values_list("letta_id", "message_type", "created_at")
    }
    now = timezone.now()
    title = f"{origin.title} (fork)"
    with transaction.atomic():
        fork = Conversation.objects.create(
            letta_id=info_id,
            agent=origin.agent,
            owner=user,
            summary=title if len(title) <= SUMMARY_CHARS else title[: SUMMARY_CHARS - 1] + "…",
            last_message_at=now,
            forked_from=origin,
            forked_at_message=at_message,
        )
        previous: datetime | None = None
        copies = []
        for info in infos:
            at = shown_at.get((info.letta_id, info.message_type), info.created_at)
            at = max(at, previous) if previous else at  # keep Letta's order
            previous = at
            copies.append(
                Message(
                    conversation=fork,
                    letta_id=info.letta_id,
                    otid=info.otid,
                    message_type=info.message_type,
                    content=info.content,
                    name=info.name,
                    run_id=info.run_id,
                    created_at=at,
                )
            )
        Message.objects.bulk_create(copies)
    return fork


# --- Rich messages: what a turn changed in the agent's memory ------------------------------------


def message_set_memory_change(*, message: Message, change: dict[str, object]) -> Message:
    """Keep, on a tool return, what its memory tool call changed (shown with the turn)."""
    message.memory_change = change
    Message.objects.filter(pk=message.pk).update(memory_change=change)
    return message
