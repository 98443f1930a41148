from datetime import timedelta

from django import template
from django.utils.safestring import SafeString

from chat import fragments
from chat.rendering import render_markdown
from conversations import approvals
from conversations.context import compaction_summary as _compaction_summary
from conversations.models import Conversation, Message

register = template.Library()


@register.simple_tag
def stored_message(message: Message) -> SafeString:
    """A stored message's article, as kept for the next page that shows it (chat.fragments)."""
    return fragments.stored_message(message)


@register.simple_tag
def sidebar_item(
    c: Conversation, conversation: object = None, current_pk: object = None
) -> SafeString:
    """A conversation's sidebar item, as kept (chat.fragments); current: the thread shown, or
    the one ``current_pk`` names (either may be missing from the context: "")."""
    current = (isinstance(conversation, Conversation) and c.pk == conversation.pk) or (
        bool(current_pk) and str(c.pk) == str(current_pk)
    )
    return fragments.sidebar_item(c, current=current)


@register.filter
def markdown(text: str) -> SafeString:
    """Render model markdown as sanitised HTML."""
    return render_markdown(text)


@register.filter
def lockout_minutes(duration: timedelta) -> str:
    """A login pause in words: "15 minutes", "1 minute", "30 seconds"."""
    seconds = round(duration.total_seconds())
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@register.filter
def compaction_summary(content: str) -> str | None:
    """The summary in a message where Letta compacted the history; None for other messages."""
    return _compaction_summary(content)


@register.filter
def tool_arguments(arguments: str) -> str:
    """A tool call's arguments, readable: JSON indented, anything else as it came (escaped by
    the template like any text)."""
    return approvals.arguments_shown(arguments)


# What an abnormal stop reason from Letta means, in words (the raw reason stays in the JSON export
# and the staff console). None: the thread says it already (a Stop).
STOP_REASON_WORDS: dict[str, str | None] = {
    "cancelled": None,
    "max_steps": "ended at the most steps the agent may take",
    "max_tokens_exceeded": "cut off at the model's length limit",
    "llm_api_error": "the AI model's service failed",
    "invalid_llm_response": "the AI model's answer could not be read",
    "invalid_tool_call": "the agent asked for a tool it cannot use",
    "error": "something went wrong on the Letta server",
    "requires_approval": "waiting for a tool call to be approved",
    "context_window_overflow_in_system_prompt": "the agent's memory no longer fits its model",
}


@register.filter
def stop_reason_words(reason: str) -> str | None:
    """An abnormal end of a turn in plain words; None when nothing more needs saying."""
    if reason in STOP_REASON_WORDS:
        return STOP_REASON_WORDS[reason]
    return "ended early"


@register.filter
def is_stop_note(error: str) -> bool:
    """Whether a message's error line is the person's own Stop (said plainly, not as a fault)."""
    return error.rstrip(".") == "Stopped" or error.startswith("Stopped:")
