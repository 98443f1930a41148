"""The staff console's own records: the audit log of what staff did with people's data."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from conversations.models import Run


class AppendOnly(Exception):
    """An audit event cannot be changed or deleted once recorded."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnly("The audit log is append-only: events cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly("The audit log is append-only: events cannot be deleted.")


class AuditEvent(models.Model):
    """One thing a staff member did with someone's data: read, exported, edited or deleted it.

    Append-only: recorded by ``staff.audit.audit_record`` and never changed or deleted (the model
    refuses, and the admin offers no change or delete). Who and whose are kept as names too, and
    the users are referenced without a database constraint, so deleting an account neither
    rewrites nor removes what was recorded about it.
    """

    class Action(models.TextChoices):
        # Not a field's choices (adding an action needs no migration): the names staff see.
        CONVERSATION_VIEW = "conversation.view", "Viewed a conversation"
        CONVERSATION_SEARCH = "conversation.search", "Searched conversations"
        CONVERSATION_EXPORT = "conversation.export", "Exported a conversation"
        CONVERSATION_RESYNC = "conversation.resync", "Re-synced a conversation from Letta"
        CONVERSATION_ARCHIVE = "conversation.archive", "Archived a conversation"
        CONVERSATION_UNARCHIVE = "conversation.unarchive", "Unarchived a conversation"
        CONVERSATION_DELETE = "conversation.delete", "Deleted a conversation"
        AGENT_EDIT = "agent.edit", "Edited an agent"
        MEMORY_BLOCK_EDIT = "memory_block.edit", "Edited a memory block"
        USAGE_EXPORT = "usage.export", "Exported usage"
        MEMORY_VIEW = "memory.view", "Viewed the memory of a person's own agent"
        USER_EXPORT = "user.export", "Exported a person's data"
        USER_ERASE = "user.erase", "Erased a person's data"
        APPROVAL_DENY = "approval.deny", "Denied an agent's request to use a tool"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    # Whose data it was (a conversation's owner), when it was someone's.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    owner_name = models.CharField(max_length=150, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects: ClassVar[models.Manager[AuditEvent]] = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.action} {self.target_repr}".strip()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnly("The audit log is append-only: events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnly("The audit log is append-only: events cannot be deleted.")

    @property
    def action_label(self) -> str:
        try:
            return str(self.Action(self.action).label)
        except ValueError:
            return self.action


class UsageReport(Run):
    """Usage in the staff console (per person, per agent, per day, and as CSV): a view of runs,
    so it has its own place and permission (``staff.view_usagereport``) in the admin."""

    class Meta:
        proxy = True
        verbose_name = "usage"
        verbose_name_plural = "usage"
