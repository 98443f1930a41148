"""Answering an approval request over HTTP (pages use the socket; this serves any client).

POST ``/c/<letta_id>/approval/`` with ``approval`` (the request's id), ``decision`` (approve or
deny) and an optional ``reason``. Only the conversation's owner reaches it (someone else's
conversation is a 404), and only one answer per request is taken.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from conversations import actions, approvals, quotas, selectors, usage


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or ""))
    except ValueError:
        return 0


@require_POST
@login_required
def approval_answer(request: HttpRequest, letta_id: str) -> HttpResponse:
    """A sync view (read and authorised in the request's own connection); the answer is the
    same action the socket calls, run on the server's event loop, where its reply streams."""
    user = request.user
    conversation = selectors.conversation_get(user=user, letta_id=letta_id)
    if conversation is None:
        raise Http404("No such conversation.")
    decision = request.POST.get("decision")
    if decision not in ("approve", "deny"):
        return HttpResponseBadRequest("Say approve or deny.", content_type="text/plain")
    if refusal := usage.quota_refusal(user=user):
        return HttpResponse(refusal, status=429, content_type="text/plain")
    try:
        async_to_sync(actions.approval_answer)(
            conversation=conversation,
            user=user,
            approval_pk=_int(request.POST.get("approval")),
            approve=decision == "approve",
            reason=request.POST.get("reason", "")[: approvals.REASON_CHARS],
        )
    except actions.ConversationBusy:
        return HttpResponse(
            "The agent is still answering in this conversation.",
            status=409,
            content_type="text/plain",
        )
    except (actions.ApprovalRefused, actions.ConversationReadOnly) as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain")
    except quotas.QuotaExceeded as exc:
        return HttpResponse(str(exc), status=429, content_type="text/plain")
    if getattr(request, "htmx", False):
        return HttpResponse(status=204)  # every tab is told by its socket
    return redirect(conversation)
