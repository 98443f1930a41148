"""Reads. Every conversation read is scoped to the person asking."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Exists, F, OrderBy, OuterRef, Q, QuerySet, Subquery

from conversations.models import Agent, Conversation, Message, Run

SIDEBAR_PAGE_SIZE = 50
THREAD_PAGE_SIZE = 100


def agent_list_visible() -> QuerySet[Agent]:
    """The agents people may pick: shared agents and personal templates that staff made visible.

    A person's own copy of a template is never listed by itself: people reach it through its
    template (``agent_conversation_agents``).
    """
    return Agent.objects.filter(visible_to_users=True, template__isnull=True)


def agent_get_visible(*, letta_id: str) -> Agent | None:
    return agent_list_visible().filter(letta_id=letta_id).first()


def agent_copy_of(*, user: AbstractBaseUser | AnonymousUser, template: Agent) -> Agent | None:
    """The person's own copy of a template, if it has been made."""
    if not user.is_authenticated:
        return None
    return Agent.objects.filter(template=template, owner=user).first()


def agent_conversation_agents(*, user: AbstractBaseUser | AnonymousUser, agent: Agent) -> list[int]:
    """The agents whose conversations a person sees under the agent they picked: the agent
    itself (a shared agent, or a template's conversations from before it was made personal) and
    the person's own copy of it, if any."""
    copies = (
        list(
            Agent.objects.filter(template=agent, owner=user)
            .order_by()  # not the agents' default order by name: ids only
            .values_list("pk", flat=True)
        )
        if user.is_authenticated
        else []
    )
    return [agent.pk, *copies]


def _conversations_on(
    user: AbstractBaseUser | AnonymousUser, agent: Agent, agent_ids: Sequence[int] | None = None
) -> QuerySet[Conversation]:
    agents = list(agent_ids) if agent_ids else agent_conversation_agents(user=user, agent=agent)
    rows = Conversation.objects.filter(owner=user)
    # One agent (most people, most agents): the sidebar index's own equality.
    return rows.filter(agent_id=agents[0]) if len(agents) == 1 else rows.filter(agent_id__in=agents)


def conversation_get(
    *, user: AbstractBaseUser | AnonymousUser, letta_id: str
) -> Conversation | None:
    """The conversation if it belongs to ``user`` and they may still reach its agent: a visible
    agent, or their own copy of a visible template. Otherwise None."""
    if not user.is_authenticated:
        return None
    # One row by the unique letta_id, its agent and template joined; whether the agent is
    # still reachable is read from them (a condition over the joins cost more to build than
    # the query took: 9 % of the chat page's CPU, 2026-12-04).
    found = list(
        Conversation.objects.select_related("agent", "agent__template").filter(
            owner=user, letta_id=letta_id
        )[:1]
    )
    if not found:
        return None
    agent = found[0].agent
    template = agent.template
    if template is None:
        reachable = agent.visible_to_users
    else:
        reachable = agent.owner_id == user.pk and template.visible_to_users
    return found[0] if reachable else None


def messages_confirmed(conversation: Conversation) -> QuerySet[Message]:
    """The conversation's messages Letta has confirmed (they have its id), newest first."""
    return Message.objects.filter(conversation=conversation, letta_id__isnull=False).order_by(
        "-created_at", "-id"
    )


def message_last_letta_id(*, conversation: Conversation) -> str | None:
    """The newest message Letta has confirmed: the cursor to read what came after it."""
    return messages_confirmed(conversation).values_list("letta_id", flat=True).first()


def message_list_after(
    *, conversation: Conversation, after_pk: int, limit: int = THREAD_PAGE_SIZE
) -> list[Message]:
    """What a page showing messages up to ``after_pk`` is missing (at most the last ``limit``)."""
    newer = (
        Message.objects.filter(conversation=conversation, pk__gt=after_pk)
        .exclude(message_type=Message.Type.SYSTEM)
        .select_related("approval")  # an approval request shows its state
        .order_by("-created_at", "-id")[:limit]
    )
    return list(reversed(newer))


def run_active(*, conversation: Conversation) -> Run | None:
    return Run.objects.filter(conversation=conversation, status=Run.Status.RUNNING).first()


def run_list_abandoned(*, heard_before: datetime, limit: int = 50) -> list[Run]:
    """Running runs whose relay has not said it is alive since ``heard_before`` (with their
    conversation and agent, for the relay that takes them over)."""
    silent = Q(relay_seen_at__lt=heard_before) | Q(
        relay_seen_at__isnull=True, created_at__lt=heard_before
    )
    return list(
        Run.objects.filter(status=Run.Status.RUNNING)
        .filter(silent)
        .select_related("conversation__agent__template", "user_message")
        .order_by("pk")[:limit]
    )


def message_get_failed(*, conversation: Conversation, pk: int) -> Message | None:
    """A message of this conversation that could not be sent (and so may be sent again)."""
    return (
        Message.objects.filter(conversation=conversation, pk=pk, message_type=Message.Type.USER)
        .exclude(error="")
        .first()
    )


# --- Threads: sidebar pages, search, older messages ----------------------------------------------

SEARCH_LIMIT = 50


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of the sidebar and the cursor of the next (None when this is the last)."""

    conversations: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Messages oldest first, and the pk to read older ones before (None when there are none)."""

    messages: list[Message]
    older_cursor: int | None


def _sidebar_order() -> tuple[OrderBy, str]:
    # DESC NULLS FIRST is PostgreSQL's own order for a DESC index: conv_sidebar_idx serves it.
    return F("last_message_at").desc(nulls_first=True), "-id"


def _encode_sidebar_cursor(conversation: Conversation) -> str:
    at = conversation.last_message_at
    micros = "null" if at is None else str((at - _EPOCH) // timedelta(microseconds=1))
    return f"{micros}_{conversation.pk}"


def _decode_sidebar_cursor(cursor: str) -> tuple[datetime | None, int]:
    """(last_message_at, pk) from a cursor; ``ValueError`` for anything else."""
    micros, _, pk = cursor.partition("_")
    if not pk.isdigit() or not (micros == "null" or micros.lstrip("-").isdigit()):
        raise ValueError(f"not a sidebar cursor: {cursor!r}")
    at = None if micros == "null" else _EPOCH + timedelta(microseconds=int(micros))
    return at, int(pk)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def conversation_page(
    *,
    user: AbstractBaseUser | AnonymousUser,
    agent: Agent,
    archived: bool = False,
    cursor: str | None = None,
    limit: int = SIDEBAR_PAGE_SIZE,
    agent_ids: Sequence[int] | None = None,
) -> ConversationPage:
    """A page of the person's conversations on ``agent``, most recent activity first.

    Keyset pagination over (last_message_at, id), one index-backed query per page whatever the
    depth; ``cursor`` comes from the previous page (``ValueError`` if it is not one).
    ``agent_ids``: ``agent_conversation_agents`` of the person and agent, if already read.
    """
    if not user.is_authenticated:
        return ConversationPage([], None)
    rows = _conversations_on(user, agent, agent_ids).filter(archived=archived)
    if cursor:
        at, pk = _decode_sidebar_cursor(cursor)
        if at is None:  # still among those with no activity (they come first)
            rows = rows.filter(
                Q(last_message_at__isnull=True, pk__lt=pk) | Q(last_message_at__isnull=False)
            )
        else:
            # The first condition is the index range; the second settles ties on the timestamp.
            rows = rows.filter(last_message_at__lte=at).filter(
                Q(last_message_at__lt=at) | Q(pk__lt=pk)
            )
    found = list(rows.order_by(*_sidebar_order())[: limit + 1])
    if len(found) <= limit:
        return ConversationPage(found, None)
    page = found[:limit]
    return ConversationPage(page, _encode_sidebar_cursor(page[-1]))


def conversation_search(
    *,
    user: AbstractBaseUser | AnonymousUser,
    agent: Agent,
    query: str,
    letta_ids: Iterable[str] = (),
    limit: int = SEARCH_LIMIT,
) -> list[Conversation]:
    """The person's conversations on ``agent`` whose title or any message contains ``query``.

    ``letta_ids`` are conversations Letta's own summary search found: only the person's count.
    """
    query = query.strip()
    if not user.is_authenticated or not query:
        return []
    in_messages = Message.objects.filter(
        conversation=OuterRef("pk"), content__icontains=query
    ).exclude(message_type=Message.Type.SYSTEM)
    matches = Q(summary__icontains=query) | Exists(in_messages)
    if letta_ids := list(letta_ids):
        matches |= Q(letta_id__in=letta_ids)
    return list(_conversations_on(user, agent).filter(matches).order_by(*_sidebar_order())[:limit])


def conversation_message_counts(*, conversations: Iterable[Conversation]) -> dict[int, int]:
    """How many messages each conversation shows (by pk; none is 0), in one query."""
    pks = [conversation.pk for conversation in conversations]
    rows = (
        Message.objects.filter(conversation_id__in=pks)
        .exclude(message_type=Message.Type.SYSTEM)
        .values("conversation_id")
        .annotate(n=Count("id"))
    )
    return {row["conversation_id"]: row["n"] for row in rows}


def _message_page(rows: QuerySet[Message], limit: int) -> MessagePage:
    found = list(
        rows.exclude(message_type=Message.Type.SYSTEM)
        .select_related("approval")  # an approval request shows its state
        .order_by("-created_at", "-id")[: limit + 1]
    )
    older = found[limit - 1].pk if len(found) > limit else None
    return MessagePage(list(reversed(found[:limit])), older)


def message_page_recent(
    *, conversation: Conversation, limit: int = THREAD_PAGE_SIZE
) -> MessagePage:
    """The last ``limit`` shown messages of a thread, oldest first, in one query."""
    return _message_page(Message.objects.filter(conversation=conversation), limit)


def message_page_before(
    *, conversation: Conversation, before: int, limit: int = THREAD_PAGE_SIZE
) -> MessagePage:
    """The ``limit`` shown messages just older than message ``before`` (a pk in this thread).

    Keyset over (created_at, id) on msg_thread_idx: one query, however long the history.
    """
    anchor = Message.objects.filter(conversation=conversation, pk=before).values("created_at")[:1]
    rows = Message.objects.filter(
        conversation=conversation, created_at__lte=Subquery(anchor)
    ).filter(Q(created_at__lt=Subquery(anchor)) | Q(pk__lt=before))
    return _message_page(rows, limit)


def message_rewind_point(*, conversation: Conversation) -> tuple[Message | None, Message | None]:
    """(the person's last message, the last message Letta holds before it) in this thread.

    "Edit and resend" and "Regenerate" fork the thread at the second and resend the first.
    """
    last_user = (
        Message.objects.filter(
            conversation=conversation, message_type=Message.Type.USER, letta_id__isnull=False
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if last_user is None:
        return None, None
    before = (
        Message.objects.filter(conversation=conversation, letta_id__isnull=False)
        .exclude(message_type=Message.Type.SYSTEM)
        .filter(created_at__lte=last_user.created_at)
        .filter(Q(created_at__lt=last_user.created_at) | Q(pk__lt=last_user.pk))
        .order_by("-created_at", "-id")
        .first()
    )
    return last_user, before


# --- Rich messages: per-turn usage; the tool call behind a tool return ---------------------------

# Stop reasons that are the normal end of a reply (the ones ``relay.STOP_REASONS`` says nothing
# about): any other is shown with the turn.
NORMAL_STOP_REASONS = frozenset({"", "end_turn", "no_tool_call", "tool_rule"})


@dataclass(frozen=True, slots=True)
class TurnUsage:
    """What the line under a finished turn says: its run's tokens, and an abnormal stop."""

    run_pk: int
    total_tokens: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    context_tokens: int | None
    stop_reason: str  # "" for a normal end of turn


def turn_usage_of(run: Run) -> TurnUsage | None:
    """The usage line of a run, or None when there is nothing to say."""
    stop = "" if run.stop_reason in NORMAL_STOP_REASONS else run.stop_reason
    if run.total_tokens is None and not stop:
        return None
    return TurnUsage(
        run_pk=run.pk,
        total_tokens=run.total_tokens,
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        context_tokens=run.context_tokens,
        stop_reason=stop,
    )


def message_list_attach_usage(
    *, conversation: Conversation, messages: list[Message], last_run_complete: bool = True
) -> None:
    """Give the last shown message of each finished run its usage line (``turn_usage``).

    Messages carry Letta's run id; the runs are read in one query, whatever the history. The line
    goes after the run's last message and any notes lettachat added right after it (where it is
    shown live). ``last_run_complete=False`` (a page of older messages): the run of the page's last
    message may go on in the next page, so it gets no line here.
    """
    last_of: dict[str, int] = {}
    current = ""  # the run of the message just before, notes after it included
    for index, message in enumerate(messages):
        if message.run_id:
            current = message.run_id
            last_of[current] = index
        elif current and message.message_type == Message.Type.ERROR:
            last_of[current] = index  # a note about that run: the line goes after it
        else:
            current = ""
    if not last_run_complete and messages:
        last_of = {run_id: i for run_id, i in last_of.items() if i != len(messages) - 1}
    if not last_of:
        return
    runs = Run.objects.filter(conversation=conversation, letta_run_id__in=list(last_of)).exclude(
        status=Run.Status.RUNNING
    )
    usage_of: dict[str, TurnUsage] = {}
    for run in runs.order_by("pk"):  # the newest run for a Letta run (a follower's) wins
        if (usage := turn_usage_of(run)) is not None:
            usage_of[run.letta_run_id] = usage
    for run_id, index in last_of.items():
        if run_id in usage_of:
            messages[index].turn_usage = usage_of[run_id]  # type: ignore[attr-defined]


def message_tool_call_before(*, message: Message) -> Message | None:
    """The tool call a tool return answers: the last one stored before it, in the same run."""
    calls = Message.objects.filter(
        conversation_id=message.conversation_id,
        message_type=Message.Type.TOOL_CALL,
        pk__lt=message.pk,
    )
    if message.run_id:
        calls = calls.filter(run_id=message.run_id)
    return calls.order_by("-pk").first()
