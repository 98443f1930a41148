"""Conversations in the staff console: a list with filters and search, the thread as a read-only
transcript in pages, and actions that go through the same services as the page (Letta first).

Everything here that shows a conversation's messages, searches them, or changes or deletes a
conversation is recorded in the audit log (staff/audit.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from conversations import exports, services, sync
from conversations.models import Conversation
from letta_gateway import LettaError, get_gateway
from staff import selectors
from staff.audit import audit_record
from staff.models import AuditEvent

Action = AuditEvent.Action


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["title", "owner", "agent", "message_count", "last_message_at", "archived"]
    list_filter = [
        "agent",
        ("owner", admin.RelatedOnlyFieldListFilter),
        "archived",
        ("last_message_at", admin.DateFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    ]
    # Message text too: the changelist turns that join into an EXISTS, one row per conversation.
    search_fields = ["summary", "letta_id", "owner__username", "messages__content"]
    ordering = ["-last_message_at", "-id"]
    list_per_page = 50
    fields = (
        "letta_id", "summary", "agent", "owner", "archived", "created_at", "last_message_at",
        "forked_from", "forked_at_message",
    )  # fmt: skip
    readonly_fields = fields
    change_form_template = "staff/conversation_change_form.html"
    actions = [
        "export_markdown", "export_json", "resync_from_letta", "archive", "unarchive",
        "delete_in_letta_and_here",
    ]  # fmt: skip

    # --- What the list shows ----------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        rows = super().get_queryset(request).select_related("agent", "owner")
        if getattr(request, "_conversation_list", False):  # counts for the list only
            rows = selectors.conversation_list_annotated(rows)
        return rows

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return int(getattr(obj, "message_count", 0))

    @admin.display(description="title", ordering="summary")
    def title(self, obj: Conversation) -> str:
        return obj.title

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        request._conversation_list = True  # type: ignore[attr-defined]
        response = super().changelist_view(request, extra_context)
        query = request.GET.get("q", "").strip()
        if query and request.method == "GET" and response.status_code == 200:
            # A search reaches into everyone's messages: who looked for what is recorded.
            audit_record(
                request=request, action=Action.CONVERSATION_SEARCH, target=None,
                detail={"query": query[:200]},
            )  # fmt: skip
        return response

    # --- Read-only: mirrored data lives in Letta --------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # conversations start in the chat, on Letta

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        # No form edits a conversation (its fields live in Letta or follow from it); the model-
        # level permission still lets staff run the actions below.
        return obj is None and super().has_change_permission(request)

    # --- One conversation: its details and the transcript -----------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        conversation = self.get_object(request, unquote(object_id))
        if (
            request.method != "GET"
            or conversation is None
            or not self.has_view_or_change_permission(request, conversation)
        ):  # the admin refuses or redirects; nothing was read
            return super().change_view(request, object_id, form_url, extra_context)
        page = selectors.transcript_page(conversation=conversation, number=request.GET.get("page"))
        audit_record(
            request=request, action=Action.CONVERSATION_VIEW, target=conversation,
            detail={"page": page.number, "messages": len(page.object_list)},
        )  # fmt: skip
        context = {
            **(extra_context or {}),
            "transcript": page,
            "transcript_pages": page.paginator.get_elided_page_range(page.number, on_each_side=2),
            "can_act": self.has_change_permission(request),
            "can_delete": self.has_delete_permission(request, conversation),
        }
        return super().change_view(request, object_id, form_url, context)

    # --- Actions ------------------------------------------------------------------------------

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would delete here only: see below
        return actions

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Conversation], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """An action run from a conversation's own page goes back to that page."""
        response = super().response_action(request, queryset, *args, **kwargs)
        back = request.POST.get("_back_to", "")
        if isinstance(response, HttpResponseRedirect) and back.isdigit():
            return HttpResponseRedirect(
                reverse("admin:conversations_conversation_change", args=[back])
            )
        return response

    @admin.action(description="Export as Markdown", permissions=["view"])
    def export_markdown(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> HttpResponse:
        return self._export(request, queryset, "md")

    @admin.action(description="Export as JSON", permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        return self._export(request, queryset, "json")

    def _export(
        self, request: HttpRequest, queryset: QuerySet[Conversation], fmt: str
    ) -> HttpResponse:
        """The page's own export (conversations/exports.py): one file, or a zip of several.
        Each conversation exported is an audit event."""
        files: list[tuple[str, str]] = []
        for conversation in queryset.order_by("pk"):
            if fmt == "md":
                body = exports.conversation_markdown(conversation)
            else:
                body = json.dumps(exports.conversation_json(conversation), indent=2,
                                  ensure_ascii=False)  # fmt: skip
            files.append((exports.conversation_filename(conversation, fmt), body))
            audit_record(
                request=request, action=Action.CONVERSATION_EXPORT, target=conversation,
                detail={"format": fmt},
            )  # fmt: skip
        if len(files) == 1:
            name, body = files[0]
            kind = "text/markdown; charset=utf-8" if fmt == "md" else "application/json"
            response = HttpResponse(body, content_type=kind)
        else:
            archive = io.BytesIO()
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
                for file_name, body in files:
                    zipped.writestr(file_name, body)
            name = f"lettachat-conversations-{timezone.now():%Y%m%d-%H%M%S}-{fmt}.zip"
            response = HttpResponse(archive.getvalue(), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @admin.action(description="Re-sync from Letta", permissions=["change"])
    def resync_from_letta(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        gateway = get_gateway()
        for conversation in queryset:
            try:
                result = sync.conversation_resync(gateway=gateway, conversation=conversation)
            except LettaError as exc:
                self.message_user(
                    request, f"“{conversation.title}” was not re-synced: {exc}", messages.ERROR
                )
                continue
            audit_record(
                request=request, action=Action.CONVERSATION_RESYNC, target=conversation,
                detail={"added": result.added, "updated": result.updated,
                        "retitled": result.retitled},
            )  # fmt: skip
            self.message_user(
                request,
                f"“{conversation.title}” re-synced from Letta: {result.added} message(s) added, "
                f"{result.updated} updated{', title from Letta' if result.retitled else ''}.",
            )

    @admin.action(description="Archive", permissions=["change"])
    def archive(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._set_archived(request, queryset, archived=True)

    @admin.action(description="Unarchive", permissions=["change"])
    def unarchive(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._set_archived(request, queryset, archived=False)

    def _set_archived(
        self, request: HttpRequest, queryset: QuerySet[Conversation], *, archived: bool
    ) -> None:
        changed = 0
        for conversation in queryset.filter(archived=not archived):
            services.conversation_set_archived(conversation=conversation, archived=archived)
            audit_record(
                request=request,
                action=Action.CONVERSATION_ARCHIVE if archived else Action.CONVERSATION_UNARCHIVE,
                target=conversation,
            )
            changed += 1
        verb = "archived" if archived else "unarchived"
        self.message_user(request, f"{changed} conversation(s) {verb}.")

    @admin.action(description="Delete in Letta, then here…", permissions=["delete"])
    def delete_in_letta_and_here(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> HttpResponse | None:
        chosen = list(queryset)
        if request.POST.get("post") == "yes":
            self._delete(request, chosen)
            return None  # back to the list
        return self._confirm_delete(request, chosen, from_action=True)

    # --- Deleting: through the page's service, after a confirmation that says so -------------

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            self.message_user(request, "That conversation does not exist.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:conversations_conversation_changelist"))
        if not self.has_delete_permission(request, conversation):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("post") == "yes":
            if self._delete(request, [conversation]):
                return HttpResponseRedirect(reverse("admin:conversations_conversation_changelist"))
            return HttpResponseRedirect(
                reverse("admin:conversations_conversation_change", args=[conversation.pk])
            )
        return self._confirm_delete(request, [conversation], from_action=False)

    def _confirm_delete(
        self, request: HttpRequest, chosen: list[Conversation], *, from_action: bool
    ) -> TemplateResponse:
        rows = selectors.conversation_list_annotated(
            Conversation.objects.filter(pk__in=[c.pk for c in chosen])
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Delete in Letta, then here?",
            "opts": self.opts,
            "conversations": list(rows),
            "from_action": from_action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "staff/conversation_delete_confirmation.html", context)

    def _delete(self, request: HttpRequest, chosen: list[Conversation]) -> bool:
        """Delete each in Letta, then in the mirror (``services.conversation_delete``); say which
        could not be, and record each attempt. True when all were deleted."""
        gateway = get_gateway()
        deleted = 0
        for conversation in chosen:
            detail = {"title": conversation.title, "agent": conversation.agent.letta_id}
            try:
                services.conversation_delete(gateway=gateway, conversation=conversation)
            except LettaError as exc:
                audit_record(
                    request=request, action=Action.CONVERSATION_DELETE, target=conversation,
                    detail={**detail, "failed": str(exc)},
                )  # fmt: skip
                self.message_user(
                    request,
                    f"“{conversation.title}” was not deleted (Letta: {exc}); nothing changed.",
                    messages.ERROR,
                )
                continue
            audit_record(
                request=request, action=Action.CONVERSATION_DELETE, target=conversation,
                detail=detail,
            )  # fmt: skip
            deleted += 1
        if deleted:
            self.message_user(request, f"{deleted} conversation(s) deleted in Letta and here.")
        return deleted == len(chosen)

    def delete_model(self, request: HttpRequest, obj: Conversation) -> None:
        """Never the mirror alone (nothing here calls it; kept safe for anything that does)."""
        self._delete(request, [obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._delete(request, list(queryset))
