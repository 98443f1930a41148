from django.contrib import admin

from conversations.models import Agent, Conversation, Message


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "letta_id", "model", "visible_to_users", "synced_at"]
    list_filter = ["visible_to_users"]
    list_editable = ["visible_to_users"]
    search_fields = ["name", "letta_id", "description"]
    readonly_fields = ["letta_id", "model", "synced_at"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "message_type", "content", "error", "letta_id", "run_id"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
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
class MessageAdmin(admin.ModelAdmin):
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
