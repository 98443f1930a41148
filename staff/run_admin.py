"""Runs in the staff console: each agent turn lettachat started, read-only (status, timing, stop
reason, tokens). Nothing of the conversation's text is shown here."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from conversations.models import Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin[Run]):
    list_display = [
        "letta_run_id", "conversation_id_shown", "owner", "agent", "status", "created_at",
        "duration", "stop_reason", "prompt_tokens", "completion_tokens", "total_tokens",
    ]  # fmt: skip
    list_filter = ["status", "stop_reason", ("created_at", admin.DateFieldListFilter)]
    search_fields = [
        "letta_run_id", "conversation__letta_id", "conversation__owner__username", "stop_reason",
    ]  # fmt: skip
    ordering = ["-created_at", "-id"]
    list_per_page = 100
    fields = (
        "letta_run_id", "conversation_id_shown", "owner", "agent", "status", "created_at",
        "finished_at", "duration", "stop_reason", "error", "prompt_tokens", "completion_tokens",
        "total_tokens", "context_tokens", "last_seq_id",
    )  # fmt: skip
    readonly_fields = fields
    actions = None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return (
            super()
            .get_queryset(request)
            .select_related("conversation__owner", "conversation__agent")
        )

    @admin.display(description="conversation", ordering="conversation__letta_id")
    def conversation_id_shown(self, obj: Run) -> str:
        return obj.conversation.letta_id

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, obj: Run) -> str:
        return obj.conversation.owner.get_username()

    @admin.display(description="agent", ordering="conversation__agent__name")
    def agent(self, obj: Run) -> str:
        return obj.conversation.agent.name

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        if obj.finished_at is None:
            return "running" if obj.status == Run.Status.RUNNING else "-"
        return f"{(obj.finished_at - obj.created_at).total_seconds():.1f} s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False
