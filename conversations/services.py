"""Writes. Each function does one thing to the mirror (and to Letta where it must)."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from conversations import approvals, otids, personal_data, quotas, selectors, titles
from conversations.models import Agent, Approval, Conversation, Message, Run
from letta_gateway import AgentConfig, Gateway, LettaError, LettaNotFound, MessageInfo

logger = logging.getLogger(__name__)

DEMO_AGENT_NAME = "lettachat demo"
DEMO_BLOCKS = {
    "human": "The person chatting through lettachat. Nothing else is known about them yet.",
    "persona": (
        "I am the lettachat demo agent. I run on a small offline model that echoes what it is "
        "told, so the whole app can be tried with no keys and no network."
    ),
}


# Letta tags on the agents lettachat makes for people, so a sync never mistakes one for an agent
# staff made (and staff can find them in Letta).
COPY_TAG = "lettachat-personal-copy"


def agent_sync(*, gateway: Gateway) -> list[Agent]:
    """Pull every agent from Letta into the mirror (visibility and sharing stay as staff set them).

    People's personal copies are kept up to date but never added by a sync: one the mirror does
    not know (its person's data was erased here, say) is not made pickable as a new agent.
    """
    now = timezone.now()
    agents = []
    for info in gateway.list_agents():
        fields = {
            "name": info.name,
            "description": info.description,
            "model": info.model,
            "synced_at": now,
        }
        if COPY_TAG in info.tags:
            updated = Agent.objects.filter(letta_id=info.letta_id).update(**fields)
            if not updated:
                continue
            agents.append(Agent.objects.get(letta_id=info.letta_id))
            continue
        agent, _ = Agent.objects.update_or_create(letta_id=info.letta_id, defaults=fields)
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
    """Start a new Letta conversation with ``agent`` (the agent the person picked), owned by
    ``user``: on a shared agent itself, on the person's own copy of a personal one (made on
    their first conversation).

    Raises ``quotas.QuotaExceeded`` (before asking Letta) past the person's rate of new ones.
    """
    quotas.conversation_create_check(user=user)
    target = (
        agent
        if agent.sharing == Agent.Sharing.SHARED
        else agent_copy_ensure(gateway=gateway, user=user, template=agent)
    )
    info = gateway.create_conversation(agent_id=target.letta_id)
    now = timezone.now()
    conversation = Conversation.objects.create(
        letta_id=info.letta_id,
        agent=target,
        owner=user,
        summary=info.summary[:200],
        last_message_at=now,
    )
    conversation.agent = target  # with its template, for the page
    return conversation


# --- Personal agents: a copy of a template for each person ---------------------------------------


def agent_copy_ensure(*, gateway: Gateway, user: AbstractBaseUser, template: Agent) -> Agent:
    """The person's own copy of ``template``, made in Letta the first time.

    The copy has the template's model, system prompt, tools and tool rules, and memory blocks of
    its own holding the template's values, except the template's common-knowledge blocks, which
    are attached read-only and shared. The person is named on it as a Letta identity. Two
    requests at once make one copy: the loser's is deleted again.
    """
    existing = Agent.objects.filter(template=template, owner=user).first()
    if existing is not None:
        return existing
    config = gateway.agent_config(agent_id=template.letta_id)
    common = _common_blocks_ensure(gateway=gateway, template=template, config=config)
    identity_id = gateway.identity_ensure(
        identifier_key=personal_data.identity_key(user), name=user.get_username()
    )
    info = gateway.create_agent_copy(
        template=config,
        name=_copy_name(template, user),
        skip_labels=frozenset(common),
        block_ids=tuple(common.values()),
        identity_id=identity_id,
        tags=(COPY_TAG, f"lettachat-template:{template.letta_id}"),
    )
    try:
        with transaction.atomic():
            return Agent.objects.create(
                letta_id=info.letta_id,
                name=info.name,
                description=template.description,
                model=info.model,
                sharing=Agent.Sharing.PERSONAL,
                template=template,
                owner=user,
                identity_id=identity_id,
                synced_at=timezone.now(),
            )
    except IntegrityError:
        mine = Agent.objects.filter(template=template, owner=user).first()
        if mine is None:
            raise
        try:  # another request made the copy meanwhile: keep that one
            gateway.delete_agent(agent_id=info.letta_id, keep_block_ids=frozenset(common.values()))
        except LettaError as exc:
            logger.warning("could not delete the spare copy %s: %s", info.letta_id, exc)
        return mine


def _copy_name(template: Agent, user: AbstractBaseUser) -> str:
    """The copy's name in Letta, for staff who look there: the template's and the person's.

    Letta allows letters, digits, spaces, hyphens, underscores and apostrophes in agent names.
    """
    name = f"{template.name} - {user.get_username()}"
    return re.sub(r"[^\w\s'-]", "_", name)[:200]


def _common_blocks_ensure(
    *, gateway: Gateway, template: Agent, config: AgentConfig
) -> dict[str, str]:
    """The template's common-knowledge blocks, by label: Letta ids of read-only blocks shared by
    every copy, made from the template's blocks the first time they are needed."""
    labels = [label for label in template.common_labels if isinstance(label, str)]
    if not labels:
        return {}
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=template.pk)
        known: dict[str, str] = dict(locked.common_blocks or {})
        values = {b.label: b for b in config.blocks}
        for label in labels:
            if label in known or label not in values:
                continue
            block = values[label]
            made = gateway.create_block(
                label=label,
                value=block.value,
                limit=block.limit,
                read_only=True,
                description=block.description or f"Common knowledge from {template.name}.",
            )
            known[label] = made.block_id
        if known != locked.common_blocks:
            Agent.objects.filter(pk=template.pk).update(common_blocks=known)
        template.common_blocks = known
    return {label: known[label] for label in labels if label in known}


@dataclass(frozen=True, slots=True)
class ReapplyReport:
    updated: int
    failed: list[str]
    common_blocks_updated: int


def agent_reapply_template(*, gateway: Gateway, template: Agent) -> ReapplyReport:
    """Give every copy of ``template`` its current system prompt, tools and tool rules; their
    memory is not touched. Common-knowledge blocks take the template's current values, and copies
    made before a label became common get its block if they have no block of that label."""
    config = gateway.agent_config(agent_id=template.letta_id)
    common = _common_blocks_ensure(gateway=gateway, template=template, config=config)
    values = {b.label: b.value for b in config.blocks}
    refreshed = 0
    for label, block_id in common.items():
        gateway.update_block(block_id=block_id, value=values.get(label, ""))
        refreshed += 1
    updated, failed = 0, []
    for copy in Agent.objects.filter(template=template).order_by("pk"):
        try:
            gateway.reapply_agent_config(agent_id=copy.letta_id, template=config)
            labels = {b.label for b in gateway.list_blocks(agent_id=copy.letta_id)}
            for label, block_id in common.items():
                if label not in labels:
                    gateway.attach_block(agent_id=copy.letta_id, block_id=block_id)
        except LettaError as exc:
            logger.warning("could not re-apply %s to %s: %s", template.letta_id, copy.letta_id, exc)
            failed.append(copy.name)
            continue
        updated += 1
    return ReapplyReport(updated, failed, refreshed)


class Recorded(NamedTuple):
    """A message recorded to be sent, and the run that sends it (None: it was sent before)."""

    message: Message
    run: Run | None
    # The newest message Letta had confirmed before it: where the reply's relay reads Letta's
    # copy from once the reply is over (``selectors.message_last_letta_id``).
    cursor: str | None


class ConversationBusy(Exception):
    """The conversation's agent is still answering: a new message must wait."""


class ConversationReadOnly(Exception):
    """The conversation was on an agent that staff have since made personal: it takes no more
    messages (they would go on feeding the template every personal copy is made from)."""

    def __str__(self) -> str:
        return (
            "This conversation was with an agent everyone shared, and takes no new messages now "
            "that each person has their own: start a new conversation."
        )


def _ensure_sendable(conversation: Conversation) -> str | None:
    """``_ensure_writable``, and raise ``ApprovalPendingError`` while the agent waits for an
    answer to an approval request (Letta takes nothing else until then): in one query, which
    also reads the reply's cursor (returned: ``selectors.message_last_letta_id``), so that the
    relay need not make a trip of its own to the database for it."""
    waiting = Approval.objects.filter(
        conversation=conversation, status=Approval.Status.PENDING
    ).values("pk")[:1]
    agent = (
        Agent.objects.only("sharing", "template_id")
        .annotate(
            waiting=Subquery(waiting),
            cursor=Subquery(selectors.messages_confirmed(conversation).values("letta_id")[:1]),
        )
        .get(pk=conversation.agent_id)
    )
    if agent.is_template:
        raise ConversationReadOnly
    if agent.waiting is not None:
        raise approvals.ApprovalPendingError(approvals.approval_get(pk=agent.waiting))
    cursor: str | None = agent.cursor
    return cursor


def _ensure_writable(conversation: Conversation) -> None:
    """Raise ``ConversationReadOnly`` if the conversation's agent (as it is now) is a template."""
    agent = Agent.objects.only("sharing", "template_id").get(pk=conversation.agent_id)
    if agent.is_template:
        raise ConversationReadOnly


def message_send(
    *, conversation: Conversation, text: str, otid: str, relay_channel: str = ""
) -> Recorded:
    """Record what the person sent and open a run for it; the first message titles the thread.

    ``relay_channel``: the channel of the relay that will follow the run, recorded with it.
    Idempotent: a message whose ``otid`` is already recorded is not recorded again (the run is
    then None). Raises ``ConversationBusy`` while another run of the conversation is running.
    """
    # Never another conversation's turn (conversations/otids.py); a resend is recognised.
    otid, existing = otids.message_for_send(conversation=conversation, otid=otid)
    if existing is not None:
        if existing.content == text:
            return Recorded(existing, None, None)
        # The same id with other words: edited before the first send was acknowledged. A new
        # message, never a silent drop (it waits its turn like any other).
        otid = str(uuid.uuid4())
    cursor = _ensure_sendable(conversation)
    now = timezone.now()
    fields: dict[str, object] = {"last_message_at": now}
    if not conversation.summary:
        fields["summary"] = titles.title_from(text)
    try:
        # One transaction, so one commit (one wait for the disk) before the reply can start.
        with transaction.atomic():
            quotas.reply_start_check(conversation=conversation)
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
            Conversation.objects.filter(pk=conversation.pk).update(**fields)
    except IntegrityError as exc:
        if Run.objects.filter(conversation=conversation, status=Run.Status.RUNNING).exists():
            raise ConversationBusy from exc
        # The same otid, sent twice at once: the other send recorded it.
        return Recorded(
            Message.objects.get(
                conversation=conversation, message_type=Message.Type.USER, otid=otid
            ),
            None,
            None,
        )
    for name, value in fields.items():
        setattr(conversation, name, value)
    return Recorded(message, run, cursor)


def message_resend(
    *, conversation: Conversation, message: Message, keep_otid: bool = False
) -> Recorded:
    """Send a message that failed again: a new turn, with a new otid so Letta does not replay
    the failed one; or, with ``keep_otid`` (its fate was unknown), the same otid, so that if
    Letta has it after all it re-attaches to that turn instead of starting a second one."""
    cursor = _ensure_sendable(conversation)
    with transaction.atomic():
        quotas.reply_start_check(conversation=conversation)
        try:
            with transaction.atomic():
                run = Run.objects.create(conversation=conversation, user_message=message)
        except IntegrityError as exc:
            raise ConversationBusy from exc
        if not keep_otid:
            message.otid = str(uuid.uuid4())
        message.error = ""
        message.save(update_fields=["otid", "error"])
    return Recorded(message, run, cursor)


def run_set_relay(*, run: Run, channel: str) -> None:
    """``channel``'s relay follows ``run`` from now on; it counts as heard of now (its first
    heartbeat may come a beat later: ``relay.heartbeat``)."""
    run.relay_channel = channel
    run.relay_seen_at = timezone.now()
    Run.objects.filter(pk=run.pk).update(relay_channel=channel, relay_seen_at=run.relay_seen_at)


def run_claim(*, run: Run, heard_before: datetime, stale_channel: str | None = None) -> bool:
    """Take over a running run whose relay has not been heard of since ``heard_before``; only
    one taker wins.

    The reaper claims any such run (its process died). A page that got no answer names the
    relay it asked (``stale_channel``): the run is claimed only if that relay is still its own,
    so a relay that is alive but slow to answer (say while Letta hangs) is never doubled.
    """
    silent = Q(relay_seen_at__lt=heard_before) | Q(
        relay_seen_at__isnull=True, created_at__lt=heard_before
    )
    runs = Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING)
    if stale_channel is not None:
        runs = runs.filter(relay_channel=stale_channel)
    claimed = runs.filter(silent).update(
        relay_channel=f"claimed.{uuid.uuid4().hex}", relay_seen_at=timezone.now()
    )
    if claimed:
        run.refresh_from_db()
    return bool(claimed)


def run_relay_alive(*, run: Run, channel: str) -> bool:
    """Whether ``channel``'s relay still follows ``run`` (it is running, and has not been
    taken over)."""
    return Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, relay_channel=channel).exists()


def run_request_stop(*, run: Run) -> bool:
    """Record that the person pressed Stop; False if it was recorded before (or the run ended)."""
    now = timezone.now()
    marked = Run.objects.filter(
        pk=run.pk, status=Run.Status.RUNNING, stop_requested_at__isnull=True
    ).update(stop_requested_at=now)
    if marked:
        run.stop_requested_at = now
    return bool(marked)


def runs_hand_over(*, run_pks: list[int]) -> None:
    """Mark running runs as unheard-of for long: another process's reaper takes them at once."""
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    Run.objects.filter(pk__in=run_pks, status=Run.Status.RUNNING).update(relay_seen_at=long_ago)


@dataclass(frozen=True)
class Heartbeat:
    """What a relay's heartbeat learnt: ``ours``: the run is still its own (running, and not
    taken over by another relay); ``stop_recorded``: a Stop was recorded on the run meanwhile
    (pressed while no relay answered, so only the record tells the relay that follows it)."""

    ours: bool
    stop_recorded: bool


def runs_seen(*, runs: list[tuple[int, str]]) -> dict[str, Heartbeat]:
    """The relays on these ``(run pk, relay channel)`` pairs are alive (their heartbeats), each
    if it still follows its run; what each learnt, by channel. Two statements for all of them."""
    if not runs:
        return {}
    pks = {pk for pk, _ in runs}
    # A relay's channel is its own (a fresh name per relay), so "pk among ours and channel among
    # ours" marks exactly the runs still followed by the relay that beats for them.
    Run.objects.filter(
        pk__in=pks, status=Run.Status.RUNNING, relay_channel__in={channel for _, channel in runs}
    ).update(relay_seen_at=timezone.now())
    found = {
        pk: (status, channel, stop_requested_at)
        for pk, status, channel, stop_requested_at in Run.objects.filter(pk__in=pks).values_list(
            "pk", "status", "relay_channel", "stop_requested_at"
        )
    }
    beats = {}
    for pk, channel in runs:
        status, following, stop_requested_at = found.get(pk, ("", "", None))
        beats[channel] = Heartbeat(
            ours=status == Run.Status.RUNNING and following == channel,
            stop_recorded=stop_requested_at is not None,
        )
    return beats


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
    try:
        return _message_store(conversation, letta_id, message_type, fields, run, seq_id)
    except IntegrityError:
        # Recorded meanwhile by another relay of the run (a takeover): now the update finds it.
        return _message_store(conversation, letta_id, message_type, fields, run, seq_id)


def _message_store(
    conversation: Conversation,
    letta_id: str,
    message_type: str,
    fields: dict[str, str],
    run: Run | None,
    seq_id: int | None,
) -> Message:
    same = Message.objects.filter(
        conversation=conversation, letta_id=letta_id, message_type=message_type
    )
    with transaction.atomic():
        # Almost always a message new here: the update finds nothing and the insert follows,
        # two statements (update_or_create takes four: a locking read and a savepoint).
        if same.update(**fields):
            message = same.get()
        else:
            message = Message.objects.create(
                conversation=conversation,
                letta_id=letta_id,
                message_type=message_type,
                created_at=timezone.now(),
                **fields,
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


def _message_of(info: MessageInfo, *, conversation: Conversation, created_at: datetime) -> Message:
    """The mirror of a message Letta stored, in ``conversation`` (not saved)."""
    return Message(
        conversation=conversation,
        letta_id=info.letta_id,
        otid=info.otid,
        message_type=info.message_type,
        content=info.content,
        name=info.name,
        run_id=info.run_id,
        created_at=created_at,
    )


def _message_from_letta(*, conversation: Conversation, info: MessageInfo) -> Message:
    """Mirror a message Letta stored that the stream did not give us."""
    # Letta's dates have whole seconds; arrival order is the order to show.
    message = _message_of(info, conversation=conversation, created_at=timezone.now())
    message.save(force_insert=True)
    return message


def message_reconcile(*, conversation: Conversation, infos: list[MessageInfo]) -> list[Message]:
    """Make the mirror agree with what Letta stored; returns the messages it had to add.

    A user message is matched by the ``otid`` we sent with it; others by Letta's id. Messages the
    stream did not show us (system messages aside) are added.
    """
    added: list[Message] = []
    # Approval requests: conversations.approvals.approvals_from_letta.
    infos = [i for i in infos if i.message_type not in (Message.Type.SYSTEM, Message.Type.APPROVAL)]
    if not infos:
        return added
    # What the mirror has of these already: one query, however many messages the turn made.
    mirrored = set(
        Message.objects.filter(
            conversation=conversation, letta_id__in={i.letta_id for i in infos}
        ).values_list("letta_id", "message_type")
    )
    for info in infos:
        if (info.letta_id, info.message_type) in mirrored:
            continue
        pending = bool(info.otid) and Message.objects.filter(
            conversation=conversation, otid=info.otid, letta_id__isnull=True
        ).update(letta_id=info.letta_id, run_id=info.run_id, error="")
        if not pending:
            added.append(_message_from_letta(conversation=conversation, info=info))
        mirrored.add((info.letta_id, info.message_type))
    return added


def message_settle_stopped(
    *,
    conversation: Conversation,
    run: Run,
    user_message: Message | None,
    sent_otid: str,
    infos: list[MessageInfo],
) -> tuple[list[Message], list[Message]]:
    """After a stop, make a turn's messages say what Letta kept: (changed, added).

    Letta keeps nothing of a cancelled run: the person's message is marked as not kept (it can be
    sent again). If Letta had finished the turn before the stop reached it, its messages are
    taken as Letta has them. Only this turn's messages are touched (a next turn may be running).
    """
    from conversations.relay.loop import FINISHED_ANYWAY, NOT_KEPT

    mine = [
        i
        for i in infos
        if (run.letta_run_id and i.run_id == run.letta_run_id)
        or (sent_otid and i.otid == sent_otid)
    ]
    changed: list[Message] = []
    added: list[Message] = []
    if user_message is not None:
        user_message = Message.objects.filter(pk=user_message.pk, otid=sent_otid).first()
        # None: sent again since (Retry), as a new turn that is not this one's to settle.
    if user_message is not None:
        kept = next((i for i in mine if i.message_type == Message.Type.USER), None)
        if kept is not None:
            user_message.letta_id, user_message.run_id, user_message.error = (
                kept.letta_id,
                kept.run_id,
                "",
            )
        else:
            user_message.error = NOT_KEPT
        user_message.save(update_fields=["letta_id", "run_id", "error"])
        changed.append(user_message)
    for info in mine:
        if info.message_type in (Message.Type.USER, Message.Type.SYSTEM):
            continue
        stored = Message.objects.filter(
            conversation=conversation, letta_id=info.letta_id, message_type=info.message_type
        ).first()
        if stored is None:
            added.append(_message_from_letta(conversation=conversation, info=info))
        elif (stored.content, stored.error) != (info.content, ""):
            stored.content = info.content
            stored.error = FINISHED_ANYWAY if stored.error else ""
            stored.save(update_fields=["content", "error"])
            changed.append(stored)
    return changed, added


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
    _ensure_writable(conversation)  # a fork lives on the same agent: a template takes none
    quotas.conversation_create_check(user=user)
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
            copies.append(_message_of(info, conversation=fork, created_at=at))
        Message.objects.bulk_create(copies)
    return fork


# --- Rich messages: what a turn changed in the agent's memory ------------------------------------


def message_set_memory_change(*, message: Message, change: dict[str, object]) -> Message:
    """Keep, on a tool return, what its memory tool call changed (shown with the turn)."""
    message.memory_change = change
    Message.objects.filter(pk=message.pk).update(memory_change=change)
    return message
