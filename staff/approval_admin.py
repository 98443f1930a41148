"""Approvals in the staff console: the agents' requests to use a tool, with the person's answer,
and the pending ones (which conversation, since when), which staff may deny (audited)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from conversations import actions
from conversations.models import Approval
from staff.audit import audit_record
from staff.models import AuditEvent

STAFF_DENIAL = "Denied by staff ({name})."


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin[Approval]):
    list_display = [
        "conversation_shown", "owner", "agent", "tools", "status", "created_at", "waiting",
    ]  # fmt: skip
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["conversation__letta_id", "conversation__owner__username"]
    ordering = ["-created_at", "-id"]
    list_per_page = 100
    fields = (
        "conversation_shown", "owner", "agent", "tools", "status", "created_at", "waiting",
        "answered_by", "answered_at", "reason",
    )  # fmt: skip
    readonly_fields = fields
    actions = ["deny_pending"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        return (
            super()
            .get_queryset(request)
            .select_related("conversation__owner", "conversation__agent", "answered_by")
        )

    @admin.display(description="conversation", ordering="conversation__letta_id")
    def conversation_shown(self, obj: Approval) -> SafeString:
        return format_html(
            '<a href="../conversation/{}/change/">{}</a>',
            obj.conversation_id,
            obj.conversation.letta_id,
        )

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, obj: Approval) -> str:
        return obj.conversation.owner.get_username()

    @admin.display(description="agent", ordering="conversation__agent__name")
    def agent(self, obj: Approval) -> str:
        return obj.conversation.agent.name

    @admin.display(description="tools")
    def tools(self, obj: Approval) -> str:
        return obj.tool_names

    @admin.display(description="waiting for")
    def waiting(self, obj: Approval) -> str:
        if not obj.pending:
            return "-"
        minutes = int((timezone.now() - obj.created_at).total_seconds() // 60)
        return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests come from Letta

    def has_delete_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False  # a request is part of its conversation's history

    @admin.action(
        description="Deny the selected pending requests (the agent is told)",
        permissions=["change"],
    )
    def deny_pending(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        """Deny each pending request as its owner would: the conversation's reply goes on."""
        name = request.user.get_username()
        denied = 0
        for approval in queryset.filter(status=Approval.Status.PENDING):
            conversation = approval.conversation
            try:
                async_to_sync(actions.approval_answer)(
                    conversation=conversation,
                    user=request.user,
                    approval_pk=approval.pk,
                    approve=False,
                    reason=STAFF_DENIAL.format(name=name),
                    by_staff=True,
                )
            except (actions.ApprovalRefused, actions.ConversationBusy) as exc:
                refusal = str(exc) or "the agent is still answering"
                self.message_user(request, f"{conversation.letta_id}: {refusal}", messages.ERROR)
                outcome = "refused"
            else:
                denied += 1
                outcome = "denied"
            audit_record(
                request=request,
                action=AuditEvent.Action.APPROVAL_DENY,
                target=conversation,
                detail={"approval": approval.pk, "tools": approval.tool_names, "outcome": outcome},
            )
        self.message_user(request, f"{denied} request(s) denied; their agents were told.")
