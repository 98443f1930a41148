"""The database mirror of what lives in Letta: agents, their conversations, and the messages.

Letta is the source of truth for an agent's memory and a conversation's context; the mirror lets
pages render from one local query, scopes every conversation to the person who made it, and keeps
what Letta does not (ownership, titles made here).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class Agent(models.Model):
    letta_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    visible_to_users = models.BooleanField(
        default=False, help_text="Whether people can pick this agent and chat with it."
    )
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class Conversation(models.Model):
    letta_id = models.CharField(max_length=64, unique=True)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="conversations")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    summary = models.CharField(max_length=200, blank=True)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["owner", "agent", "archived", "-last_message_at", "-id"],
                name="conv_sidebar_idx",
            )
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("conversation_detail", args=[self.letta_id])

    @property
    def title(self) -> str:
        return self.summary or "New conversation"


class Message(models.Model):
    class Type(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        REASONING = "reasoning", "Reasoning"
        TOOL_CALL = "tool_call", "Tool call"
        TOOL_RETURN = "tool_return", "Tool return"
        SYSTEM = "system", "System"
        ERROR = "error", "Error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # Null until Letta has confirmed the message (a user message is written when it is sent).
    # Not unique alone: Letta gives a step's reasoning and its answer the same id.
    letta_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # The offline threading id we send with a user message, to match Letta's copy to ours.
    otid = models.CharField(max_length=64, blank=True, db_index=True)
    message_type = models.CharField(max_length=16, choices=Type.choices)
    content = models.TextField(blank=True)
    # For tool calls: the tool's name; for tool returns: "success" or "error".
    name = models.CharField(max_length=200, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    # Set when a user message could not be delivered, or a reply ended abnormally.
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at", "id"], name="msg_thread_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["letta_id", "message_type"],
                condition=models.Q(letta_id__isnull=False),
                name="msg_letta_id_type_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_message_type_display()}: {self.content[:60]}"
