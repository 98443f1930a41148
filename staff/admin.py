from django.contrib import admin
from django.http import HttpRequest

from conversations.models import Conversation, Message
from staff.models import AuditEvent


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    fields = ["created_at", "message_type", "content", "error", "letta_id", "run_id"]
    readonly_fields = ["created_at", "message_type", "content", "error", "letta_id", "run_id"]
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["title", "letta_id", "agent", "owner", "archived", "last_message_at"]
    list_filter = ["archived", "agent"]
    search_fields = ["summary", "letta_id", "owner__username"]
    list_select_related = ["agent", "owner"]
    readonly_fields = [
        "letta_id", "agent", "owner", "created_at", "last_message_at", "forked_from",
        "forked_at_message",
    ]  # fmt: skip
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ["created_at", "message_type", "short_content", "conversation", "run_id"]
    list_filter = ["message_type"]
    search_fields = ["content", "letta_id", "run_id", "conversation__letta_id"]
    list_select_related = ["conversation"]
    readonly_fields = [
        "conversation", "letta_id", "otid", "message_type", "content", "name", "run_id", "error",
        "created_at",
    ]  # fmt: skip

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]


# --- The audit log: listed and searched, never added to, changed or deleted here ----------------


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
    readonly_fields = [
        "created_at", "actor_name", "actor", "action", "target_type", "target_id", "target_repr",
        "owner_name", "owner", "ip_address", "detail",
    ]  # fmt: skip
    fields = [
        "created_at", "actor_name", "actor", "action", "target_type", "target_id", "target_repr",
        "owner_name", "owner", "ip_address", "detail",
    ]  # fmt: skip
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


# Agents and people (sharing modes, memory blocks, a person's data): their own module.
from staff import admin_people  # noqa: E402, F401
