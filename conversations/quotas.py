"""Per-person limits on what costs Letta work: new conversations, and replies running at once.

- **New conversations.** At most ``LETTACHAT_NEW_CONVERSATION_RATE`` ("N/M": N in any M seconds)
  per person, forks included; counted from the database, so the limit holds across server
  processes. Checked before Letta is asked for anything.
- **Replies running at once.** At most ``LETTACHAT_MAX_RUNNING_REPLIES`` runs of one person's
  conversations running at the same time (one per conversation in any case); a send or retry
  past it is refused and the text stays in the box. Checked in the send's transaction with the
  person's row locked, so two sends at once in two processes cannot both pass. A run left
  "running" by a server process that died stops counting after ``STALE_RUN``: its conversation
  takes it over when next opened.

Refusals raise ``QuotaExceeded`` with a sentence fit to show.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from conversations.models import Conversation, Run

STALE_RUN = timedelta(minutes=15)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")


class QuotaExceeded(Exception):
    """A per-person limit was reached; ``str()`` says which and what to do."""


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float


def new_conversation_rate() -> Rate:
    value = settings.LETTACHAT_NEW_CONVERSATION_RATE
    match = _RATE.match(str(value))
    if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ValueError(
            "LETTACHAT_NEW_CONVERSATION_RATE must look like "
            f'"10/60" (N conversations/M s), not {value!r}'
        )
    return Rate(int(match[1]), float(match[2]))


def conversation_create_check(*, user: AbstractBaseUser) -> None:
    """Raise ``QuotaExceeded`` if ``user`` started too many conversations just now."""
    rate = new_conversation_rate()
    now = timezone.now()
    recent = list(
        Conversation.objects.filter(
            owner_id=user.pk, created_at__gt=now - timedelta(seconds=rate.seconds)
        )
        .order_by("-created_at")
        .values_list("created_at", flat=True)[: rate.count]
    )
    if len(recent) < rate.count:
        return
    wait = max(1, math.ceil((recent[-1] + timedelta(seconds=rate.seconds) - now).total_seconds()))
    raise QuotaExceeded(
        f"you started {rate.count} conversation{'s' if rate.count != 1 else ''} "
        f"in the last {_duration(rate.seconds)}. "
        f"Wait {wait} second{'s' if wait != 1 else ''} and try again."
    )


def reply_start_check(*, conversation: Conversation) -> None:
    """Raise ``QuotaExceeded`` if the owner has the most replies running that they may.

    Call inside the transaction that opens the run: it locks the owner's row until commit.
    """
    limit = settings.LETTACHAT_MAX_RUNNING_REPLIES
    owner_id = conversation.owner_id
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk"))
    running = (
        Run.objects.filter(
            conversation__owner_id=owner_id,
            status=Run.Status.RUNNING,
            created_at__gt=timezone.now() - STALE_RUN,
        )
        .exclude(conversation=conversation)
        .count()
    )
    if running >= limit:
        raise QuotaExceeded(
            f"You have {running} replies still coming in other conversations; at most {limit} "
            "may run at once. Your message is still in the box: send it when one is done."
        )


def _duration(seconds: float) -> str:
    if seconds == 60:
        return "minute"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"
