from django import template
from django.utils.safestring import SafeString

from chat.rendering import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Render model markdown as sanitised HTML."""
    return render_markdown(text)
