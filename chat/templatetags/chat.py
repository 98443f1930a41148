from datetime import timedelta

from django import template
from django.utils.safestring import SafeString

from chat.rendering import render_markdown
from conversations import approvals
from conversations.context import compaction_summary as _compaction_summary

register = template.Library()


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
