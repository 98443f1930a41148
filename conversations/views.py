"""Pages. Thin: parse, authorise through a selector, call a service, render a page or partial."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import push_url, reswap, retarget
from django_htmx.middleware import HtmxDetails

from conversations import selectors, services
from conversations.letta_gateway import LettaError, get_gateway
from conversations.models import Agent, Conversation

PAGE = "conversations/chat.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _wants_partial(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _context(
    request: HtmxHttpRequest, *, agent: Agent | None, conversation: Conversation | None = None
) -> dict[str, object]:
    return {
        "agents": list(selectors.agent_list_visible()),
        "agent": agent,
        "conversation": conversation,
        "conversations": selectors.conversation_list(user=request.user, agent=agent)
        if agent
        else [],
        "messages": (
            selectors.message_list_recent(conversation=conversation) if conversation else []
        ),
        "max_chars": settings.LETTACHAT_MAX_MESSAGE_CHARS,
    }


@require_safe
@login_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    agent = selectors.agent_list_visible().first()
    if agent is None:
        return render(request, PAGE, _context(request, agent=None))
    return redirect("agent_detail", agent.letta_id)


@require_safe
@login_required
def agent_detail(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    agent = selectors.agent_get_visible(letta_id=letta_id)
    if agent is None:
        raise Http404("No such agent.")
    return render(request, PAGE, _context(request, agent=agent))


@require_safe
@login_required
def conversation_detail(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, letta_id=letta_id)
    if conversation is None:
        raise Http404("No such conversation.")
    context = _context(request, agent=conversation.agent, conversation=conversation)
    if _wants_partial(request):
        return _thread_response(request, context)
    return render(request, PAGE, context)


@require_POST
@login_required
def conversation_create(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    agent = selectors.agent_get_visible(letta_id=letta_id)
    if agent is None:
        raise Http404("No such agent.")
    try:
        conversation = services.conversation_create(
            gateway=get_gateway(), user=request.user, agent=agent
        )
    except LettaError as exc:
        message = f"Could not start a conversation: {exc}"
        if request.htmx:
            response = render(request, "conversations/flash.html", {"message": message})
            return reswap(retarget(response, "#flash"), "innerHTML")
        return render(
            request, PAGE, {**_context(request, agent=agent), "flash": message}, status=503
        )
    if not request.htmx:
        return redirect("conversation_detail", conversation.letta_id)
    context = _context(request, agent=agent, conversation=conversation)
    return push_url(_thread_response(request, context), conversation.get_absolute_url())


@require_safe
@login_required
def letta_status(request: HtmxHttpRequest) -> HttpResponse:
    """A banner when Letta is unreachable; loaded after the page so a dead server never slows it."""
    try:
        get_gateway().health()
    except LettaError as exc:
        return render(request, "conversations/letta_status.html", {"error": str(exc)})
    return HttpResponse("")


def _thread_response(request: HtmxHttpRequest, context: dict[str, object]) -> HttpResponse:
    """The thread, plus the sidebar out of band so it marks the current conversation."""
    thread = render_to_string(f"{PAGE}#thread", context, request=request)
    sidebar = render_to_string(f"{PAGE}#sidebar", {**context, "sidebar_oob": True}, request=request)
    return HttpResponse(thread + sidebar)
