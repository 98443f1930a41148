"""Letta into the mirror: re-read one conversation, or import a person's conversations that exist
on Letta but not here. Reads go by cursor pages; writes happen once per conversation.

Letta is the source of truth for what a conversation holds; the mirror keeps what Letta does not
(who owns it, lettachat's own notes about failed replies, the order messages arrived in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from conversations import approvals, titles
from conversations.models import Agent, Conversation, Message
from letta_gateway import ConversationInfo, Gateway, MessageInfo

PAGE = 100
SUMMARY_CHARS = 200

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def read_messages(
    *,
    gateway: Gateway,
    conversation_id: str,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
) -> list[MessageInfo]:
    """Every message Letta holds for the conversation, oldest first, system messages left out.

    Read page by page (``after`` = the last id read) until a page brings nothing new: a short
    page does not mean the end, since messages of kinds lettachat does not show are dropped from
    a page. ``progress`` is told the count read so far after each page.
    """
    infos: list[MessageInfo] = []
    seen: set[tuple[str, str]] = set()
    after: str | None = None
    while True:
        batch = gateway.list_messages(conversation_id=conversation_id, after=after, limit=page)
        fresh = [m for m in batch if (m.letta_id, m.message_type) not in seen]
        for info in fresh:
            seen.add((info.letta_id, info.message_type))
            if info.message_type != "system":
                infos.append(info)
        if progress is not None and fresh:
            progress(len(infos))
        if not fresh or batch[-1].letta_id == after:
            return infos
        after = batch[-1].letta_id


@dataclass(frozen=True, slots=True)
class Resync:
    added: int
    updated: int
    retitled: bool


def conversation_resync(
    *, gateway: Gateway, conversation: Conversation, page: int = PAGE
) -> Resync:
    """Make the mirror hold what Letta holds for ``conversation``: its summary (when Letta has
    one), messages it is missing (placed in Letta's order), and the text of messages that differ.

    lettachat's own notes and messages Letta never received stay. Raises ``LettaError`` (then
    nothing changed here).
    """
    info = gateway.retrieve_conversation(conversation_id=conversation.letta_id)
    infos = read_messages(gateway=gateway, conversation_id=conversation.letta_id, page=page)
    added = updated = 0
    with transaction.atomic():
        mirror = {
            (m.letta_id, m.message_type): m
            for m in Message.objects.filter(conversation=conversation, letta_id__isnull=False)
        }
        pending = {
            m.otid: m
            for m in Message.objects.filter(
                conversation=conversation, letta_id__isnull=True, message_type=Message.Type.USER
            ).exclude(otid="")
        }
        previous: datetime | None = None
        for letta in infos:
            known = mirror.get((letta.letta_id, letta.message_type))
            if known is None and letta.otid in pending:  # sent from here, never confirmed
                known = pending.pop(letta.otid)
                known.letta_id, known.run_id, known.error = letta.letta_id, letta.run_id, ""
                known.save(update_fields=["letta_id", "run_id", "error"])
                updated += 1
            if known is None:  # just after the message before it: later ones keep their dates
                at = letta.created_at if previous is None else _after(previous, previous)
                Message.objects.create(conversation=conversation, **_message_fields(letta, at))
                added += 1
            else:
                changed = [
                    name
                    for name, value in (("content", letta.content), ("name", letta.name))
                    if getattr(known, name) != value
                ]
                for name in changed:
                    setattr(known, name, getattr(letta, name))
                at = known.created_at
                if previous is not None and at <= previous:  # shown in Letta's order
                    at = known.created_at = _after(previous, previous)
                    changed.append("created_at")
                if changed:
                    known.save(update_fields=changed)
                    updated += "content" in changed or "name" in changed
            previous = at
        retitled = bool(info.summary) and info.summary[:SUMMARY_CHARS] != conversation.summary
        fields: dict[str, object] = {}
        if retitled:
            fields["summary"] = info.summary[:SUMMARY_CHARS]
        if added:
            latest = Message.objects.filter(conversation=conversation).aggregate(
                at=Max("created_at")
            )["at"]
            fields["last_message_at"] = max(filter(None, [conversation.last_message_at, latest]))
        if fields:
            Conversation.objects.filter(pk=conversation.pk).update(**fields)
            for name, value in fields.items():
                setattr(conversation, name, value)
        # A request Letta still waits on (its last message) is shown and can be answered.
        approvals.approvals_from_letta(conversation=conversation, infos=infos)
    return Resync(added=added, updated=updated, retitled=retitled)


@dataclass(frozen=True, slots=True)
class Imported:
    imported: list[Conversation]
    skipped: list[str]  # Letta ids already in the mirror (whoever owns them)
    messages: int


def conversations_import(
    *,
    gateway: Gateway,
    owner: User,
    agent: Agent,
    page: int = PAGE,
    progress: Progress = _quiet,
) -> Imported:
    """Import the conversations ``agent`` has on Letta and the mirror lacks, owned by ``owner``.

    Conversations are listed and their messages read by cursor pages; each conversation is
    written in one transaction once read, so an interruption keeps what was done (a rerun skips
    it). ``progress`` gets a line per conversation and per page of a long one.
    """
    imported: list[Conversation] = []
    skipped: list[str] = []
    total = 0
    after: str | None = None
    while True:
        listed = gateway.list_conversations(agent_id=agent.letta_id, after=after, limit=page)
        fresh = [c for c in listed if c.letta_id != after]
        if not fresh:
            break
        known = set(
            Conversation.objects.filter(letta_id__in=[c.letta_id for c in fresh]).values_list(
                "letta_id", flat=True
            )
        )
        for info in fresh:
            if info.letta_id in known:
                skipped.append(info.letta_id)
                progress(f"{info.letta_id}: already here, skipped")
                continue

            def read(count: int, letta_id: str = info.letta_id) -> None:
                if count >= page:
                    progress(f"{letta_id}: {count} messages read…")

            infos = read_messages(
                gateway=gateway, conversation_id=info.letta_id, page=page, progress=read
            )
            conversation = _mirror_new(info=info, infos=infos, owner=owner, agent=agent)
            imported.append(conversation)
            total += len(infos)
            progress(
                f"{info.letta_id}: imported “{conversation.title}” ({len(infos)} messages) "
                f"[{len(imported)} so far]"
            )
        after = fresh[-1].letta_id
    return Imported(imported=imported, skipped=skipped, messages=total)


def _mirror_new(
    *, info: ConversationInfo, infos: list[MessageInfo], owner: User, agent: Agent
) -> Conversation:
    previous: datetime | None = None
    otids: set[str] = set()
    messages = []
    for letta in infos:
        at = previous = _after(previous, letta.created_at)
        fields = _message_fields(letta, at)
        if letta.message_type == "user" and letta.otid:
            if letta.otid in otids:  # one message per otid here (msg_user_otid_unique)
                fields["otid"] = ""
            otids.add(letta.otid)
        messages.append(fields)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            letta_id=info.letta_id,
            agent=agent,
            owner=owner,
            summary=(info.summary or _title(infos))[:SUMMARY_CHARS],
            last_message_at=info.last_message_at or previous or timezone.now(),
        )
        Message.objects.bulk_create(
            [Message(conversation=conversation, **fields) for fields in messages], batch_size=1000
        )
        approvals.approvals_from_letta(conversation=conversation, infos=infos)
    return conversation


def _after(previous: datetime | None, at: datetime) -> datetime:
    """``at``, or just after ``previous`` when it is not later: a strict order, whatever the ties
    (Letta's dates have whole seconds) or clocks."""
    if previous is None or at > previous:
        return at
    return previous + timedelta(microseconds=1)


def _title(infos: list[MessageInfo]) -> str:
    first = next((m.content for m in infos if m.message_type == "user"), "")
    return titles.title_from(first)


def _message_fields(letta: MessageInfo, at: datetime) -> dict[str, object]:
    return {
        "letta_id": letta.letta_id,
        "otid": letta.otid,
        "message_type": letta.message_type,
        "content": letta.content,
        "name": letta.name,
        "run_id": letta.run_id,
        "created_at": at,
    }
