"""The audit log in the staff console: listed and searched, never added to, changed or deleted."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from staff.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    list_display = [
        "created_at", "actor_name", "action_label", "target_repr", "owner_name", "ip_address",
    ]  # fmt: skip
    list_filter = ["action", "created_at"]
    search_fields = [
        "actor_name", "owner_name", "action", "target_type", "target_id", "target_repr",
        "ip_address",
    ]  # fmt: skip
    date_hierarchy = "created_at"
    fields = (
        "created_at", "actor_name", "actor", "action", "target_type", "target_id", "target_repr",
        "owner_name", "owner", "ip_address", "detail",
    )  # fmt: skip
    readonly_fields = fields
    actions = None
    show_full_result_count = False

    @admin.display(description="action", ordering="action")
    def action_label(self, obj: AuditEvent) -> str:
        return obj.action_label

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
