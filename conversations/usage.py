"""Usage: messages sent and tokens used, per person, per agent and per day, from what each run
recorded; and the optional daily quotas that a send must be under before it reaches Letta.

A message is a run (one turn of the agent started by a person's message, retries included); its
tokens are what Letta's ``usage_statistics`` reported for that run. Days start at midnight in
``TIME_ZONE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from conversations.models import Run


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str  # a username, an agent's Letta id, a date (ISO)
    label: str  # what to show: the same, or the agent's name
    messages: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _runs(*, since: date, until: date) -> QuerySet[Run]:
    """Runs started from the start of ``since`` to the end of ``until`` (local days)."""
    return Run.objects.filter(
        created_at__gte=_day_start(since), created_at__lt=_day_start(until + timedelta(days=1))
    )


def _sums(rows: QuerySet[Run], *group: str) -> QuerySet[Run, dict[str, Any]]:
    sums: QuerySet[Run, dict[str, Any]] = (
        rows.order_by()
        .values(*group)
        .annotate(
            messages=Count("pk"),
            prompt=Coalesce(Sum("prompt_tokens"), 0),
            completion=Coalesce(Sum("completion_tokens"), 0),
            total=Coalesce(Sum("total_tokens"), 0),
        )
    )
    return sums


def _row(key: object, label: object, sums: dict[str, Any]) -> UsageRow:
    return UsageRow(
        key=str(key),
        label=str(label),
        messages=sums["messages"],
        prompt_tokens=sums["prompt"],
        completion_tokens=sums["completion"],
        total_tokens=sums["total"],
    )


def usage_by_person(*, since: date, until: date) -> list[UsageRow]:
    """Each person's messages and tokens, most tokens first."""
    group = "conversation__owner__username"
    rows = _sums(_runs(since=since, until=until), group)
    found = [_row(r[group], r[group], r) for r in rows]
    return sorted(found, key=lambda r: (-r.total_tokens, -r.messages, r.key))


def usage_by_agent(*, since: date, until: date) -> list[UsageRow]:
    """Each agent's messages and tokens, most tokens first."""
    key, name = "conversation__agent__letta_id", "conversation__agent__name"
    rows = _sums(_runs(since=since, until=until), key, name)
    found = [_row(r[key], r[name], r) for r in rows]
    return sorted(found, key=lambda r: (-r.total_tokens, -r.messages, r.key))


def usage_by_day(*, since: date, until: date) -> list[UsageRow]:
    """Each day's messages and tokens, oldest first (days without any are left out)."""
    rows = _runs(since=since, until=until).annotate(
        day=TruncDate("created_at", tzinfo=timezone.get_current_timezone())
    )
    found = [_row(r["day"].isoformat(), r["day"].isoformat(), r) for r in _sums(rows, "day")]
    return sorted(found, key=lambda r: r.key)


def usage_today(*, user: AbstractBaseUser) -> tuple[int, int]:
    """(messages, tokens) of ``user`` since midnight."""
    today = timezone.localdate()
    sums = (
        _runs(since=today, until=today)
        .filter(conversation__owner_id=user.pk)
        .aggregate(messages=Count("pk"), tokens=Coalesce(Sum("total_tokens"), 0))
    )
    return sums["messages"], sums["tokens"]


@dataclass(frozen=True, slots=True)
class Quota:
    messages_per_day: int | None
    tokens_per_day: int | None

    @property
    def any(self) -> bool:
        return bool(self.messages_per_day or self.tokens_per_day)


def quota() -> Quota:
    """The daily limits per person set by the environment (0 or unset: none)."""
    return Quota(
        messages_per_day=settings.LETTACHAT_QUOTA_MESSAGES_PER_DAY or None,
        tokens_per_day=settings.LETTACHAT_QUOTA_TOKENS_PER_DAY or None,
    )


def quota_refusal(*, user: AbstractBaseUser | AnonymousUser) -> str | None:
    """Why ``user`` may not send another message today, fit to show them; None when they may.

    No query at all without a quota.
    """
    limits = quota()
    if not limits.any or not user.is_authenticated:
        return None
    messages, tokens = usage_today(user=user)
    again = "You can send messages again tomorrow."
    if limits.messages_per_day and messages >= limits.messages_per_day:
        return (
            f"You have sent {messages:,} messages today, your daily limit of "
            f"{limits.messages_per_day:,}. {again} Your message is still in the box."
        )
    if limits.tokens_per_day and tokens >= limits.tokens_per_day:
        return (
            f"Your conversations have used {tokens:,} tokens today, your daily limit of "
            f"{limits.tokens_per_day:,}. {again} Your message is still in the box."
        )
    return None
