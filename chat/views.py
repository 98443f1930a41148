"""Pages. Thin: parse, authorise through a selector, call a service, render a page or partial."""

from __future__ import annotations

import json
import tempfile
import time
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
)
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import push_url, reswap, retarget
from django_htmx.middleware import HtmxDetails

from chat import fragments
from conversations import exports, personal_data, quotas, selectors, services
from conversations.context import conversation_context
from conversations.models import Agent, Conversation, Message
from letta_gateway import LettaError, get_gateway

PAGE = "chat/chat.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _wants_partial(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _context(
    request: HtmxHttpRequest,
    *,
    agent: Agent | None,
    conversation: Conversation | None = None,
    archived_view: bool | None = None,
) -> dict[str, object]:
    return {
        "agents": list(selectors.agent_list_visible()),
        "agent": agent,
        "conversation": conversation,
        **_threads_context(
            request, agent=agent, conversation=conversation, archived_view=archived_view
        ),
        "max_chars": settings.LETTACHAT_MAX_MESSAGE_CHARS,
        "max_frame_bytes": settings.LETTACHAT_MAX_FRAME_BYTES,  # checked by the page (chat.js)
        "otid": uuid.uuid4(),  # the composer's id for the next message: a resend is recognised
        # A personal agent: whether the person's own copy has been made yet.
        "personal_copy": (
            selectors.agent_copy_of(user=request.user, template=agent)
            if agent is not None and agent.sharing == Agent.Sharing.PERSONAL and not conversation
            else None
        ),
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
    context = _context(request, agent=conversation.agent.origin, conversation=conversation)
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
    except (LettaError, quotas.QuotaExceeded) as exc:
        message = f"Could not start a conversation: {exc}"
        if request.htmx:
            response = render(request, "chat/flash.html", {"message": message})
            return reswap(retarget(response, "#flash"), "innerHTML")
        status = 429 if isinstance(exc, quotas.QuotaExceeded) else 503
        return render(
            request, PAGE, {**_context(request, agent=agent), "flash": message}, status=status
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
        return render(request, "chat/letta_status.html", {"error": str(exc)})
    return HttpResponse("")


def _thread_response(request: HtmxHttpRequest, context: dict[str, object]) -> HttpResponse:
    """The thread, plus the sidebar out of band so it marks the current conversation."""
    thread = render_to_string(f"{PAGE}#thread", context, request=request)
    if request.headers.get(SIDEBAR_HEADER):  # a click in the loaded list: keep its pages
        return HttpResponse(thread + _current_marks(request, context))
    sidebar = render_to_string(f"{PAGE}#sidebar", {**context, "sidebar_oob": True}, request=request)
    return HttpResponse(thread + sidebar)


# --- Threads: sidebar pages, search, older messages, rename, archive, delete, fork ---------------

THREADS = "chat/threads.html"
# Sent by links inside the loaded sidebar lists (hx-headers): the thread switch then only moves
# the "current" mark, so pages loaded by scrolling and the list's scroll position stay.
SIDEBAR_HEADER = "X-Lettachat-Sidebar"


def _threads_context(
    request: HtmxHttpRequest,
    *,
    agent: Agent | None,
    conversation: Conversation | None,
    archived_view: bool | None,
) -> dict[str, object]:
    """The sidebar's first page (active or archived), and the thread's last messages."""
    if archived_view is None:
        archived_view = bool(conversation and conversation.archived)
    sidebar = (
        selectors.conversation_page(user=request.user, agent=agent, archived=archived_view)
        if agent
        else selectors.ConversationPage([], None)
    )
    thread = (
        selectors.message_page_recent(conversation=conversation)
        if conversation
        else selectors.MessagePage([], None)
    )
    if conversation:  # the line under each finished turn: one query, however long the thread
        selectors.message_list_attach_usage(conversation=conversation, messages=thread.messages)
    return {
        "conversations": sidebar.conversations,
        "sidebar_next": sidebar.next_cursor,
        "archived_view": archived_view,
        "messages": thread.messages,
        "older_cursor": thread.older_cursor,
        # Whether "Edit and resend"/"Regenerate" apply (a message of the person's that Letta has).
        "rewind_available": any(
            m.message_type == Message.Type.USER and m.letta_id for m in thread.messages
        ),
        "fork_point": services.conversation_fork_point_known(),
        "fork_point_unsupported": services.FORK_POINT_UNSUPPORTED,
    }


def _current_marks(request: HtmxHttpRequest, context: dict[str, object]) -> str:
    """The sidebar items of the conversation left and the one opened, out of band.

    The one left comes first: the page keeps one current mark (static/js/ux.js), the first in
    the list, after each swap; with the opened one swapped first, a left one above it in the
    list kept the mark and the opened one lost it, and then neither had it.
    """
    conversation = context["conversation"]
    opened: str = fragments.sidebar_item(conversation, current=True, oob=True)
    try:
        previous = resolve(request.htmx.current_url_abs_path or "")
    except Resolver404:
        return opened
    letta_id = previous.kwargs.get("letta_id")
    if previous.url_name != "conversation_detail" or not isinstance(conversation, Conversation):
        return opened
    left = (
        selectors.conversation_get(user=request.user, letta_id=letta_id)
        if letta_id != conversation.letta_id
        else None
    )
    if left is None:
        return opened
    return fragments.sidebar_item(left, current=False, oob=True) + opened


def _own_conversation(request: HtmxHttpRequest, letta_id: str) -> Conversation:
    conversation = selectors.conversation_get(user=request.user, letta_id=letta_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _visible_agent(letta_id: str) -> Agent:
    agent = selectors.agent_get_visible(letta_id=letta_id)
    if agent is None:
        raise Http404("No such agent.")
    return agent


def _failure(
    request: HtmxHttpRequest,
    message: str,
    *,
    conversation: Conversation,
    status: int = 503,
    extra: str = "",
) -> HttpResponse:
    """Say what went wrong: in the flash line for htmx, else on the conversation's page."""
    if request.htmx:
        flash = render_to_string("chat/flash.html", {"message": message}, request=request)
        return reswap(retarget(HttpResponse(flash + extra), "#flash"), "innerHTML")
    context = _context(request, agent=conversation.agent.origin, conversation=conversation)
    return render(request, PAGE, {**context, "flash": message}, status=status)


@require_safe
@login_required
def agent_archived(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The agent's page with the person's archived conversations in the sidebar."""
    agent = _visible_agent(letta_id)
    return render(request, PAGE, _context(request, agent=agent, archived_view=True))


@require_safe
@login_required
def conversation_list_page(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The next page of the sidebar, after ``cursor``: its items and the next "more" marker."""
    agent = _visible_agent(letta_id)
    archived = request.GET.get("view") == "archived"
    try:
        page = selectors.conversation_page(
            user=request.user, agent=agent, archived=archived, cursor=request.GET.get("cursor")
        )
    except ValueError:
        return HttpResponseBadRequest("That is not a page of this list.")
    current = request.GET.get("current", "")
    return render(
        request,
        f"{THREADS}#sidebar-page",
        {
            "agent": agent,
            "conversations": page.conversations,
            "sidebar_next": page.next_cursor,
            "archived_view": archived,
            "current_pk": int(current) if current.isdigit() else None,
        },
    )


@require_safe
@login_required
def conversation_search(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The person's conversations on the agent matching ``q`` by title or message text."""
    agent = _visible_agent(letta_id)
    query = " ".join(request.GET.get("q", "").split())[: services.SUMMARY_CHARS]
    letta_ids: list[str] = []
    letta_error = ""
    if query:
        try:
            letta_ids = [
                info.letta_id
                for info in get_gateway().list_conversations(
                    agent_id=agent.letta_id, summary_search=query, limit=selectors.SEARCH_LIMIT
                )
            ]
        except LettaError as exc:  # the mirror's own titles and messages are still searched
            letta_error = str(exc)
    results = selectors.conversation_search(
        user=request.user, agent=agent, query=query, letta_ids=letta_ids
    )
    context = {
        "agent": agent,
        "search_query": query,
        "search_results": results,
        "search_letta_error": letta_error,
        "search_response": True,
    }
    if _wants_partial(request):
        return render(request, f"{THREADS}#search-results", context)
    return render(request, PAGE, {**_context(request, agent=agent), **context})


@require_safe
@login_required
def message_list_older(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The messages just before message ``before``, with the button for the ones before them."""
    conversation = _own_conversation(request, letta_id)
    before = request.GET.get("before", "")
    if not before.isdigit():
        return HttpResponseBadRequest("Which messages? (before=<message>)")
    page = selectors.message_page_before(conversation=conversation, before=int(before))
    selectors.message_list_attach_usage(
        conversation=conversation, messages=page.messages, last_run_complete=False
    )
    return render(
        request,
        f"{THREADS}#older-messages",
        {
            "conversation": conversation,
            "messages": page.messages,
            "older_cursor": page.older_cursor,
        },
    )


@require_POST
@login_required
def conversation_rename(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    conversation = _own_conversation(request, letta_id)
    try:
        services.conversation_rename(
            gateway=get_gateway(),
            conversation=conversation,
            summary=request.POST.get("summary", ""),
        )
    except ValidationError as exc:
        if not request.htmx:
            return _failure(request, exc.messages[0], conversation=conversation, status=400)
        context = _context(request, agent=conversation.agent.origin, conversation=conversation)
        return render(
            request,
            f"{THREADS}#thread-header",
            {
                **context,
                "rename_error": exc.messages[0],
                "rename_value": request.POST.get("summary", ""),
            },
        )
    except LettaError as exc:
        return _failure(
            request, f"Could not rename the conversation: {exc}", conversation=conversation
        )
    if not request.htmx:
        return redirect("conversation_detail", conversation.letta_id)
    context = _context(request, agent=conversation.agent.origin, conversation=conversation)
    header = render_to_string(f"{THREADS}#thread-header", context, request=request)
    item = fragments.sidebar_item(conversation, current=True, oob=True)
    return HttpResponse(header + item)


def _set_archived(request: HtmxHttpRequest, letta_id: str, *, archived: bool) -> HttpResponse:
    conversation = _own_conversation(request, letta_id)
    services.conversation_set_archived(conversation=conversation, archived=archived)
    if not request.htmx:
        return redirect("conversation_detail", conversation.letta_id)
    # The sidebar follows, as on a reload: an archived conversation shows among the archived.
    context = _context(request, agent=conversation.agent.origin, conversation=conversation)
    header = render_to_string(f"{THREADS}#thread-header", context, request=request)
    sidebar = render_to_string(f"{PAGE}#sidebar", {**context, "sidebar_oob": True}, request=request)
    return HttpResponse(header + sidebar)


@require_POST
@login_required
def conversation_archive(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    return _set_archived(request, letta_id, archived=True)


@require_POST
@login_required
def conversation_unarchive(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    return _set_archived(request, letta_id, archived=False)


@require_POST
@login_required
def conversation_delete(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    conversation = _own_conversation(request, letta_id)
    agent, was_archived = conversation.agent.origin, conversation.archived
    try:
        services.conversation_delete(gateway=get_gateway(), conversation=conversation)
    except LettaError as exc:
        return _failure(
            request, f"Could not delete the conversation: {exc}", conversation=conversation
        )
    where = reverse("agent_archived" if was_archived else "agent_detail", args=[agent.letta_id])
    if not request.htmx:
        return redirect(where)
    context = _context(request, agent=agent, archived_view=was_archived)
    thread = render_to_string(f"{PAGE}#thread", context, request=request)
    sidebar = render_to_string(f"{PAGE}#sidebar", {**context, "sidebar_oob": True}, request=request)
    gone = format_html('<li id="found-{}" hx-swap-oob="delete"></li>', letta_id)  # from a search
    return push_url(HttpResponse(thread + sidebar + gone), where)


@require_POST
@login_required
def conversation_fork(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """A copy of the conversation, owned by the same person, opened in its place.

    With ``message`` (a message of the thread) the copy ends at that message, where Letta can.
    """
    conversation = _own_conversation(request, letta_id)
    at_message = None
    if message := request.POST.get("message", ""):
        at_message = (
            conversation.messages.filter(pk=message, letta_id__isnull=False).first()
            if message.isdigit()
            else None
        )
        if at_message is None:
            return HttpResponseBadRequest("That message cannot be forked from.")
    return _open_fork(request, conversation, at_message=at_message)


def _open_fork(
    request: HtmxHttpRequest,
    conversation: Conversation,
    *,
    at_message: Message | None,
    composer_text: str = "",
    rewind: str = "",
) -> HttpResponse:
    try:
        fork = services.conversation_fork(
            gateway=get_gateway(),
            user=request.user,
            conversation=conversation,
            at_message=at_message,
        )
    except services.ForkPointIgnored as exc:
        return _failure(
            request,
            str(exc),
            conversation=conversation,
            status=409,
            extra=_rewind_controls(request, conversation, oob=True),
        )
    except services.ConversationReadOnly as exc:
        return _failure(request, str(exc), conversation=conversation, status=409)
    except LettaError as exc:
        return _failure(
            request, f"Could not fork the conversation: {exc}", conversation=conversation
        )
    except quotas.QuotaExceeded as exc:
        return _failure(
            request,
            f"Could not fork the conversation: {exc}",
            conversation=conversation,
            status=429,
        )
    if not request.htmx:
        return redirect("conversation_detail", fork.letta_id)
    context = {
        **_context(request, agent=fork.agent.origin, conversation=fork),
        "composer_text": composer_text,
        "rewind": rewind,
    }
    return push_url(_thread_response(request, context), fork.get_absolute_url())


@require_POST
@login_required
def conversation_rewind(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """Edit and resend / Regenerate: fork just before the person's last message and open the
    fork with that message in the box (sent again at once for Regenerate).

    Needs a Letta server that forks at a message; on one that does not, it says so.
    """
    conversation = _own_conversation(request, letta_id)
    action = request.POST.get("action", "")
    if action not in ("edit", "regenerate"):
        return HttpResponseBadRequest("Edit or regenerate?")
    last_user, point = selectors.message_rewind_point(conversation=conversation)
    if last_user is None:
        return _failure(
            request, "There is no message of yours here yet.", conversation=conversation, status=400
        )
    if services.conversation_fork_point_supported(gateway=get_gateway()) is False:
        return _failure(
            request,
            f"{services.FORK_POINT_UNSUPPORTED} Edit and resend and Regenerate need that.",
            conversation=conversation,
            status=409,
            extra=_rewind_controls(request, conversation, oob=True),
        )
    if point is None:  # the person's first message: the fork would hold nothing of the thread
        try:
            fresh = services.conversation_create(
                gateway=get_gateway(), user=request.user, agent=conversation.agent.origin
            )
        except (LettaError, quotas.QuotaExceeded) as exc:
            return _failure(
                request, f"Could not start a conversation: {exc}", conversation=conversation
            )
        context = {
            **_context(request, agent=fresh.agent.origin, conversation=fresh),
            "composer_text": last_user.content,
            "rewind": action,
        }
        return push_url(_thread_response(request, context), fresh.get_absolute_url())
    return _open_fork(
        request, conversation, at_message=point, composer_text=last_user.content, rewind=action
    )


def _rewind_controls(request: HtmxHttpRequest, conversation: Conversation, *, oob: bool) -> str:
    return render_to_string(
        f"{THREADS}#rewind-controls",
        {
            "conversation": conversation,
            "rewind_available": True,
            "fork_point": services.conversation_fork_point_known(),
            "fork_point_checked": True,
            "fork_point_unsupported": services.FORK_POINT_UNSUPPORTED,
            "rewind_oob": oob,
        },
        request=request,
    )


@require_safe
@login_required
def conversation_rewind_controls(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """Edit and resend / Regenerate, once it is known whether Letta can fork at a message."""
    conversation = _own_conversation(request, letta_id)
    services.conversation_fork_point_supported(gateway=get_gateway())
    return HttpResponse(_rewind_controls(request, conversation, oob=False))


# --- Rich messages: the memory panel -------------------------------------------------------------


@require_safe
@login_required
def conversation_memory(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The agent's memory blocks (shared by all its conversations), for the thread's panel."""
    conversation = _own_conversation(request, letta_id)
    context: dict[str, object] = {"conversation": conversation, "memory_loaded": True}
    try:
        context["memory_blocks"] = get_gateway().list_blocks(agent_id=conversation.agent.letta_id)
    except LettaError as exc:  # the panel says so; the page goes on from the mirror
        context["memory_error"] = str(exc)
    return render(request, f"{PAGE}#memory-panel", context)


# --- Conversation info: Letta's view of the thread ------------------------------------------------


@require_safe
@login_required
def conversation_info(request: HtmxHttpRequest, letta_id: str) -> HttpResponse:
    """The thread's info panel: Letta's summary, its context window now, which messages left it."""
    conversation = _own_conversation(request, letta_id)
    context: dict[str, object] = {"conversation": conversation}
    try:
        context["info"] = conversation_context(gateway=get_gateway(), conversation=conversation)
    except LettaError as exc:  # the panel says so; the thread goes on from the mirror
        context["info_error"] = str(exc)
    return render(request, "chat/conversation_info.html#info-body", context)


# --- A person's data: downloads, export, erase ---------------------------------------------------


@require_safe
@login_required
def conversation_download(request: HtmxHttpRequest, letta_id: str, fmt: str) -> HttpResponse:
    """The conversation as a file: Markdown to read, or JSON with every message's type."""
    conversation = _own_conversation(request, letta_id)
    if fmt == "md":
        body = exports.conversation_markdown(conversation)
        content_type = "text/markdown; charset=utf-8"
    elif fmt == "json":
        body = json.dumps(exports.conversation_json(conversation), indent=2, ensure_ascii=False)
        content_type = "application/json"
    else:
        raise Http404("No such format.")
    response = HttpResponse(body, content_type=content_type)
    filename = exports.conversation_filename(conversation, fmt)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_safe
@login_required
def my_data(request: HtmxHttpRequest) -> HttpResponse:
    """What lettachat holds of the person, with export and erase."""
    return render(request, "chat/my_data.html", personal_data.data_summary(user=request.user))


@require_safe
@login_required
def my_data_export(request: HtmxHttpRequest) -> HttpResponse:
    """Everything of the person as a zip: every conversation (Markdown and JSON), and the memory
    of their personal agents."""
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it once sent
    try:
        exports.user_export_zip(gateway=get_gateway(), user=request.user, out=archive)
    except LettaError as exc:
        archive.close()
        context = {
            **personal_data.data_summary(user=request.user),
            "flash": f"Your data could not be exported: the memory of your agents could not be "
            f"read ({exc}). Nothing was left out; please try again later.",
        }
        return render(request, "chat/my_data.html", context, status=503)
    archive.seek(0)
    name = f"lettachat-{request.user.get_username()}-{timezone.now():%Y%m%d-%H%M%S}.zip"
    return FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")


@require_POST
@login_required
def my_data_erase(request: HtmxHttpRequest) -> HttpResponse:
    """Delete the person's conversations (in Letta, then here) and their personal agents.

    Long work is done in slices: a slice that runs out of time, or meets a Letta failure, says
    what is left, and the next press finishes it. Nothing is deleted here before it is gone from
    Letta.
    """
    if request.POST.get("confirm", "").strip().lower() != personal_data.ERASE_CONFIRMATION:
        context = {
            **personal_data.data_summary(user=request.user),
            "erase_error": f"Type “{personal_data.ERASE_CONFIRMATION}” to confirm.",
        }
        return render(request, "chat/my_data.html", context, status=400)
    report = personal_data.user_erase(
        gateway=get_gateway(),
        user=request.user,
        deadline=time.monotonic() + settings.LETTACHAT_ERASE_SLICE_SECONDS,
    )
    context = {**personal_data.data_summary(user=request.user), "erase_report": report}
    return render(request, "chat/my_data.html", context, status=200 if report.done else 503)
