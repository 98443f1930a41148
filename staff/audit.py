"""The one way to record what staff did with people's data (``staff.models.AuditEvent``).

Call it after the read, export, edit or delete it records, with the request that asked for it::

    audit_record(request=request, action=AuditEvent.Action.CONVERSATION_VIEW, target=conversation)

Nothing here changes or deletes an event: the log is append-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import models
from django.http import HttpRequest

from lettachat.request_log import client_ip
from staff.models import AuditEvent


def audit_record(
    *,
    request: HttpRequest | None,
    action: str,
    target: models.Model | None,
    detail: dict[str, Any] | None = None,
    owner: Any = None,
) -> AuditEvent:
    """Record that the request's user did ``action`` to ``target`` (a model instance, or None).

    ``owner``: whose data it was; by default the target's ``owner`` if it has one (a
    conversation's). ``detail``: anything else worth keeping (JSON: a page number, a query, what
    changed). ``request`` None: done from the command line (no actor, no address).
    """
    user = getattr(request, "user", None) if request is not None else None
    actor = user if user is not None and user.is_authenticated else None
    if owner is None and target is not None:
        owner = getattr(target, "owner", None)
    if owner is not None and not isinstance(owner, get_user_model()):
        owner = None
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=str(action),
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(getattr(target, "letta_id", None) or getattr(target, "pk", "") or ""),
        target_repr=str(target)[:300] if target is not None else "",
        owner=owner,
        owner_name=owner.get_username() if owner is not None else "",
        ip_address=client_ip(request) if request is not None else None,
        detail=detail or {},
    )
