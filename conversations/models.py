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
    """A Letta agent that lettachat knows.

    Staff choose per agent how people share it (``sharing``):

    - **Personal** (the default): the agent is a *template*. Each person who starts a conversation
      with it gets a Letta agent of their own made from it (``template`` points back to it,
      ``owner`` is the person), and all their conversations go there: memory, conversation search
      and archival memory then hold only that person's words.
    - **Shared**: everyone's conversations are on this one agent. Its memory blocks and its recall
      tools (``conversation_search`` searches every conversation of the agent) carry what one
      person says into other people's conversations; people are told so before they write.

    A person's copy is never visible by itself: people reach it through its template.
    """

    class Sharing(models.TextChoices):
        PERSONAL = "personal", "Personal: each person talks to a copy of their own"
        SHARED = "shared", "Shared: everyone talks to this one agent"

    letta_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    visible_to_users = models.BooleanField(
        default=False, help_text="Whether people can pick this agent and chat with it."
    )
    sharing = models.CharField(
        max_length=16,
        choices=Sharing.choices,
        default=Sharing.PERSONAL,
        help_text=(
            "Personal: each person gets their own copy of this agent (its model, system prompt, "
            "tools and the starting values of its memory), so nothing one person says reaches "
            "another. Shared: everyone talks to this agent, and what one person says can reach "
            "another through its memory and its conversation search."
        ),
    )
    # A person's own copy: the template it was made from, and the person.
    template = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="copies"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,  # erase the person's data first (it deletes the copy in Letta)
        null=True,
        blank=True,
        related_name="personal_agents",
    )
    # The Letta identity that names the owner on their copy.
    identity_id = models.CharField(max_length=64, blank=True)
    # On a template: the labels of its blocks that staff made common knowledge (one read-only
    # block attached to every copy), and the Letta ids of those common blocks once made.
    common_labels = models.JSONField(default=list, blank=True)
    common_blocks = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "owner"],
                condition=models.Q(template__isnull=False),
                name="one_copy_per_person_and_template",
            ),
            models.CheckConstraint(
                condition=models.Q(template__isnull=True, owner__isnull=True)
                | models.Q(template__isnull=False, owner__isnull=False),
                name="a_copy_has_a_template_and_an_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def origin(self) -> Agent:
        """The agent people picked: a copy's template, or the agent itself."""
        return self.template if self.template is not None else self

    @property
    def is_copy(self) -> bool:
        return self.template_id is not None

    @property
    def is_shared(self) -> bool:
        return not self.is_copy and self.sharing == self.Sharing.SHARED

    @property
    def is_template(self) -> bool:
        """A personal agent people get copies of: its own conversations take no new messages."""
        return not self.is_copy and self.sharing == self.Sharing.PERSONAL


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
    # Where a fork came from, and the origin's message it was asked to end at (None: all of it).
    # Kept here: Letta does not record a fork's origin (and 0.16.8 ignores the fork point).
    forked_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )
    forked_at_message = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

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

    @property
    def read_only(self) -> bool:
        """A conversation on an agent that staff have since made personal: kept, not continued.

        Continuing it would go on feeding the template that every new personal copy is made from.
        """
        return self.agent.is_template


class Message(models.Model):
    class Type(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        REASONING = "reasoning", "Reasoning"
        TOOL_CALL = "tool_call", "Tool call"
        TOOL_RETURN = "tool_return", "Tool return"
        SYSTEM = "system", "System"
        ERROR = "error", "Error"
        # The agent asks a person to approve tool calls before they run (its ``Approval``).
        APPROVAL = "approval", "Approval request"

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
    # For a tool return that changed the agent's memory: what changed ({"label", "removed",
    # "added", "size", "limit"}), shown with the turn (see conversations/memory.py).
    memory_change = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at", "id"], name="msg_thread_idx")]
        constraints = [
            # Per conversation: a fork shares its origin's Letta message ids.
            models.UniqueConstraint(
                fields=["letta_id", "message_type", "conversation"],
                condition=models.Q(letta_id__isnull=False),
                name="msg_letta_id_type_conv_unique",
            ),
            # A resent message (same otid) is the same message: never a second copy.
            models.UniqueConstraint(
                fields=["conversation", "otid"],
                condition=models.Q(message_type="user") & ~models.Q(otid=""),
                name="msg_user_otid_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_message_type_display()}: {self.content[:60]}"


class Run(models.Model):
    """One agent turn: a Letta background run answering one user message.

    At most one run per conversation is running: that row is the lock that makes a second send
    wait, across server processes. The relay that streams it listens on ``relay_channel`` for
    snapshot and stop requests; ``last_seq_id`` is Letta's position at the last stored message, from
    where a new relay resumes the stream if the old one is gone.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    user_message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    letta_run_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    last_seq_id = models.IntegerField(null=True, blank=True)
    relay_channel = models.CharField(max_length=200, blank=True)
    # When the relay following the run last said it is alive (every few seconds): a running run
    # not heard of for longer is taken over by another process (``conversations.relay.reaper``).
    relay_seen_at = models.DateTimeField(null=True, blank=True)
    # When someone pressed Stop: whichever relay follows the run (one taking it over included)
    # stops it.
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.IntegerField(null=True, blank=True)
    completion_tokens = models.IntegerField(null=True, blank=True)
    total_tokens = models.IntegerField(null=True, blank=True)
    context_tokens = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="running"),
                name="one_running_run_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.letta_run_id or 'run'} ({self.status})"


class Approval(models.Model):
    """The agent asks the conversation's owner to approve tool calls before they run.

    Letta stops the run (stop reason ``requires_approval``) and takes no other message in the
    conversation until it has an answer for every tool call of the request. ``message`` is the
    request in the thread (Letta's ``approval_request_message``); ``tool_calls`` are its calls
    (``{"id", "name", "arguments"}``). At most one is pending per conversation. Answering is one
    conditional update (pending → approved/denied) in the transaction that opens the run which
    carries the answer to Letta, so a double click or two tabs send one answer.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for an answer"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        # Answered outside lettachat, or no longer asked (Letta moved on).
        RESOLVED = "resolved", "No longer pending"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="approvals"
    )
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="approval")
    # The run that asked, and the run that carried the answer to Letta.
    run = models.ForeignKey(
        Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="approvals_asked"
    )
    answer_run = models.ForeignKey(
        Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="approvals_answered"
    )
    tool_calls = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    answered_at = models.DateTimeField(null=True, blank=True)
    # The answer's offline threading id: a resend after a lost connection is recognised.
    otid = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="pending"),
                name="one_pending_approval_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tool_names} ({self.get_status_display()})"

    @property
    def pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def tool_names(self) -> str:
        return ", ".join(str(c.get("name") or "?") for c in self.tool_calls) or "a tool"
