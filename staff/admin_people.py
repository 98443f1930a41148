"""The staff console for agents and people: how each agent is shared and what that means for
privacy, memory blocks staff may edit, and a person's data (export, erase).

Registered from ``staff/admin.py``. Every read of a person's own data (the memory of their copy of
an agent) and every edit, export and erase is recorded in the audit log.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from conversations import exports, personal_data, services
from conversations.models import Agent
from letta_gateway import AgentConfig, LettaError, MemoryBlockInfo, get_gateway
from staff.audit import audit_record
from staff.models import AuditEvent

# Tools that let an agent bring back what was said in other conversations of the same agent.
RECALL_TOOLS = {
    "conversation_search": "finds what anyone said in any conversation with this agent",
    "archival_memory_search": "finds what the agent filed away from any conversation",
    "archival_memory_insert": "files away what is said, for any conversation to find",
    "semantic_search_files": "searches the files attached to the agent",
}
User = get_user_model()


class AgentForm(forms.ModelForm[Agent]):
    common_labels = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Common knowledge",
        help_text=(
            "Blocks shared read-only with every person's copy: one block for all, which the "
            "copies can read and cannot change (each copy gets its own block for the others). "
            "Applies to copies made from now on; “Re-apply” gives it to earlier copies."
        ),
    )

    approval_tools = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Tools that need approval",
        help_text=(
            "The agent asks the person in the conversation before it runs these tools (they "
            "see the tool and its arguments, and approve or deny). Saved on Letta as the "
            "agent's tool rules; a template's personal copies get them when made, earlier "
            "copies with “Re-apply”."
        ),
    )

    class Meta:
        model = Agent
        fields = ["visible_to_users", "sharing", "common_labels"]

    def __init__(
        self,
        *args: Any,
        labels: list[str] | None = None,
        tools: list[str] | None = None,
        approval: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        known = list(dict.fromkeys([*(labels or []), *(self.instance.common_labels or [])]))
        field = self.fields["common_labels"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(label, label) for label in known]
        if "approval_tools" in self.fields:
            tool_field = self.fields["approval_tools"]
            assert isinstance(tool_field, forms.MultipleChoiceField)
            names = sorted({*(tools or []), *approval})
            tool_field.choices = [(name, name) for name in names]
            tool_field.initial = sorted(approval)
            self.approval_before = approval

    def clean_approval_tools(self) -> list[str]:
        return list(self.cleaned_data.get("approval_tools") or [])

    def clean_common_labels(self) -> list[str]:
        return list(self.cleaned_data.get("common_labels") or [])


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    form = AgentForm
    list_display = [
        "name", "kind", "sharing", "visible_to_users", "owner", "copy_count", "synced_at",
    ]  # fmt: skip
    list_filter = ["sharing", "visible_to_users", ("template", admin.EmptyFieldListFilter)]
    list_editable = ["visible_to_users"]
    list_select_related = ["owner", "template"]
    search_fields = ["name", "letta_id", "description", "owner__username"]
    actions = ["sync_from_letta", "reapply_template"]
    readonly_fields = [
        "letta_id", "name", "description", "model", "template", "owner", "identity_id",
        "synced_at",
    ]  # fmt: skip
    change_form_template = "staff/agent_change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(copies_made=Count("copies"))

    def get_fields(  # type: ignore[override]  # names only, never groups
        self, request: HttpRequest, obj: Agent | None = None
    ) -> list[str]:
        shown = ["letta_id", "name", "description", "model", "synced_at"]
        if obj is not None and obj.is_copy:
            return [*shown, "template", "owner", "identity_id"]
        fields = [*shown, "visible_to_users", "sharing", "common_labels"]
        config = self._letta_config(request, obj) if obj is not None else None
        return [*fields, "approval_tools"] if isinstance(config, AgentConfig) else fields

    def get_form(
        self, request: HttpRequest, obj: Agent | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Agent]]:
        form = super().get_form(request, obj, change, **kwargs)
        config = self._letta_config(request, obj) if obj is not None else None
        known = isinstance(config, AgentConfig)
        labels = [b.label for b in config.blocks] if isinstance(config, AgentConfig) else []
        tools = [t.name for t in config.tools] if isinstance(config, AgentConfig) else []
        approval = config.approval_tools if isinstance(config, AgentConfig) else frozenset()

        class WithLabels(form):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, labels=labels, tools=tools, approval=approval, **kw)
                if not known:
                    self.fields.pop("approval_tools", None)  # Letta could not say which

        return WithLabels

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents come from Letta (the sync), never from here

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        return False  # a mirror row only: deleting it here would delete nothing in Letta

    # The list -------------------------------------------------------------------------------

    @admin.display(description="kind")
    def kind(self, obj: Agent) -> str:
        if obj.is_copy:
            return "a person's copy"
        return "shared" if obj.sharing == Agent.Sharing.SHARED else "template"

    @admin.display(description="copies", ordering="copies_made")
    def copy_count(self, obj: Agent) -> int | str:
        return "" if obj.is_copy else getattr(obj, "copies_made", 0)

    # What crosses between people ------------------------------------------------------------

    def _letta_config(self, request: HttpRequest, obj: Agent | None) -> AgentConfig | LettaError:
        """The agent as Letta has it, read once per request (memory, tools)."""
        if obj is None:
            raise ValueError("no agent")
        cache: dict[int, AgentConfig | LettaError] = request.__dict__.setdefault(
            "_agent_configs", {}
        )
        if obj.pk not in cache:
            try:
                cache[obj.pk] = get_gateway().agent_config(agent_id=obj.letta_id)
            except LettaError as exc:
                cache[obj.pk] = exc
            if obj.is_copy:  # a person's own memory: reading it is a staff read
                audit_record(
                    request=request,
                    action=AuditEvent.Action.MEMORY_VIEW,
                    target=obj,
                    owner=obj.owner,
                )
        return cache[obj.pk]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        agent = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if agent is not None:
            extra["privacy_html"] = self._privacy(request, agent)
        return super().change_view(request, object_id, form_url, extra)

    def _privacy(self, request: HttpRequest, obj: Agent) -> SafeString:
        """What the agent's sharing mode lets cross between people, from Letta's own view."""
        config = self._letta_config(request, obj)
        if isinstance(config, LettaError):
            return format_html('<p class="errornote">Letta could not be read: {}</p>', str(config))
        blocks = _blocks_html(obj, config.blocks, editable=not obj.is_copy)
        tools = [t.name for t in config.tools]
        recall = [(name, RECALL_TOOLS[name]) for name in tools if name in RECALL_TOOLS]
        recall_html = format_html_join("", "<li><code>{}</code>: {}</li>", recall) or format_html(
            "<li>none</li>"
        )
        if obj.is_copy:
            head = format_html(
                "<p>{}'s own agent, made from <strong>{}</strong>. Only their conversations "
                "reach it; its memory below is theirs (this read is recorded).</p>",
                obj.owner.get_username() if obj.owner else "?",
                obj.template.name if obj.template else "?",
            )
        elif obj.sharing == Agent.Sharing.SHARED:
            people = User.objects.filter(is_active=True).count()
            warning = (
                format_html(
                    '<p class="errornote" id="shared-warning">Shared and visible to {} people: '
                    "what one of them tells it can reach all the others, through every block "
                    "below and these tools. They are told so before they write.</p>",
                    people,
                )
                if obj.visible_to_users and people > 1
                else ""
            )
            head = format_html(
                "{}<p><strong>What crosses between people:</strong> every memory block below "
                "(each person's conversations read it, and the agent can write what one person "
                "says into it, unless it is read-only), and these recall tools:</p><ul>{}</ul>",
                warning,
                recall_html,
            )
        else:
            head = format_html(
                "<p>Personal: each person talks to a copy of their own ({} made so far). New "
                "copies start from the memory below and take this agent's model, system prompt, "
                "tools and rules. Nobody talks to this agent itself. Recall tools the copies "
                "get (each searches only its own person's conversations):</p><ul>{}</ul>",
                obj.copies.count(),
                recall_html,
            )
        return format_html("{}{}", head, blocks)

    # Saving: say what a change of sharing means --------------------------------------------

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        before = Agent.objects.filter(pk=obj.pk).values_list("sharing", flat=True).first()
        super().save_model(request, obj, form, change)
        approval = self._save_approval_tools(request, obj, form)
        audit_record(
            request=request,
            action=AuditEvent.Action.AGENT_EDIT,
            target=obj,
            detail={"changed": form.changed_data, "sharing": obj.sharing, **approval},
        )
        if before == obj.sharing:
            return
        earlier = obj.conversations.count()
        if obj.sharing == Agent.Sharing.PERSONAL:
            self.message_user(
                request,
                f"{obj.name} is now personal: each person's next conversation goes to a copy of "
                f"their own, which starts from its memory as it is now (review it: it may hold "
                f"what people told it while it was shared). The {earlier} earlier "
                "conversation(s) on it stay readable by their owners but take no new messages.",
                messages.WARNING,
            )
        else:
            self.message_user(
                request,
                f"{obj.name} is now shared: new conversations go to it, and everyone who talks "
                "to it shares its memory and its conversation search; people are told before "
                f"they write. The {obj.copies.count()} personal copies made before stay private "
                "to their owners.",
                messages.WARNING,
            )

    def _save_approval_tools(self, request: HttpRequest, obj: Agent, form: Any) -> dict[str, Any]:
        """Apply a change of the tools that need approval on Letta; what changed, for the audit
        log (attempts Letta refused included)."""
        if "approval_tools" not in getattr(form, "cleaned_data", {}):
            return {}
        wanted = set(form.cleaned_data["approval_tools"])
        before = set(getattr(form, "approval_before", frozenset()))
        changes = {name: True for name in wanted - before} | {
            name: False for name in before - wanted
        }
        if not changes:
            return {}
        done: dict[str, bool] = {}
        for name, required in sorted(changes.items()):
            try:
                get_gateway().set_tool_approval(
                    agent_id=obj.letta_id, tool_name=name, required=required
                )
            except LettaError as exc:
                self.message_user(
                    request, f"Letta refused to change approval for {name}: {exc}", messages.ERROR
                )
                continue
            done[name] = required
        if done:
            needs = sorted(n for n, r in done.items() if r)
            self.message_user(
                request,
                "Approval saved on Letta: "
                + (f"{', '.join(needs)} now wait(s) for the person's approval" if needs else "")
                + ("; " if needs and len(done) > len(needs) else "")
                + ", ".join(f"{n} no longer does" for n, r in sorted(done.items()) if not r)
                + ".",
                messages.SUCCESS,
            )
        return {"approval_tools": done, "approval_refused": sorted(set(changes) - set(done))}

    # Actions --------------------------------------------------------------------------------

    @admin.action(description="Sync agents from Letta (all of them)")
    def sync_from_letta(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        try:
            agents = services.agent_sync(gateway=get_gateway())
        except LettaError as exc:
            self.message_user(request, f"Could not reach Letta: {exc}", messages.ERROR)
            return
        self.message_user(request, f"{len(agents)} agent(s) synced from Letta.")

    @admin.action(description="Re-apply template to its personal copies (memory untouched)")
    def reapply_template(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for template in queryset.filter(template__isnull=True, sharing=Agent.Sharing.PERSONAL):
            try:
                report = services.agent_reapply_template(gateway=get_gateway(), template=template)
            except LettaError as exc:
                self.message_user(request, f"{template.name}: {exc}", messages.ERROR)
                continue
            audit_record(
                request=request,
                action=AuditEvent.Action.AGENT_EDIT,
                target=template,
                detail={"reapplied_to": report.updated, "failed": report.failed},
            )
            self.message_user(
                request,
                f"{template.name}: system prompt, tools and tool rules re-applied to "
                f"{report.updated} copies; their memory was not touched"
                + (
                    f"; common knowledge refreshed ({report.common_blocks_updated})"
                    if report.common_blocks_updated
                    else ""
                )
                + (f"; failed for {', '.join(report.failed)}" if report.failed else "")
                + ". Conversations already started keep the system prompt they began with.",
                messages.WARNING if report.failed else messages.SUCCESS,
            )

    # Editing a block of a shared agent or a template ----------------------------------------

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/blocks/<str:label>/",
                self.admin_site.admin_view(self.block_edit),
                name="conversations_agent_block_edit",
            )
        ]
        return own + super().get_urls()

    def block_edit(self, request: HttpRequest, pk: int, label: str) -> HttpResponse:
        agent = get_object_or_404(Agent, pk=pk)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        if agent.is_copy:
            raise PermissionDenied("A person's own memory is theirs: erase their data instead.")
        gateway = get_gateway()
        try:
            block = next(
                (b for b in gateway.list_blocks(agent_id=agent.letta_id) if b.label == label), None
            )
        except LettaError as exc:
            self.message_user(
                request, f"Could not read the memory from Letta: {exc}", messages.ERROR
            )
            return HttpResponseRedirect(reverse("admin:conversations_agent_change", args=[pk]))
        if block is None:
            raise Http404("No such block.")
        form = BlockForm(request.POST or None, initial={"value": block.value}, limit=block.limit)
        if request.method == "POST" and form.is_valid():
            value = form.cleaned_data["value"] if "save" in request.POST else ""
            try:
                gateway.update_block(block_id=block.block_id, value=value)
            except LettaError as exc:
                self.message_user(request, f"Letta refused the change: {exc}", messages.ERROR)
            else:
                audit_record(
                    request=request,
                    action=AuditEvent.Action.MEMORY_BLOCK_EDIT,
                    target=agent,
                    detail={"label": label, "before": block.value, "after": value},
                )
                self.message_user(
                    request,
                    f"{agent.name}: “{label}” {'cleared' if not value else 'saved'}. Conversations "
                    "that already started keep the memory they began with; new ones see this.",
                )
                return HttpResponseRedirect(reverse("admin:conversations_agent_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Edit the “{label}” memory of {agent.name}",
            "agent": agent,
            "block": block,
            "form": form,
            "opts": self.model._meta,
            "shared": agent.sharing == Agent.Sharing.SHARED,
        }
        return TemplateResponse(request, "staff/block_edit.html", context)


class BlockForm(forms.Form):
    value = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "cols": 90}), required=False)

    def __init__(self, *args: Any, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit

    def clean_value(self) -> str:
        value = str(self.cleaned_data.get("value") or "")
        if self.limit is not None and len(value) > self.limit:
            raise forms.ValidationError(
                f"This block holds at most {self.limit:,} characters; that is {len(value):,}."
            )
        return value


def _blocks_html(
    agent: Agent, blocks: tuple[MemoryBlockInfo, ...], *, editable: bool
) -> SafeString:
    rows = []
    for block in blocks:
        edit = (
            format_html(
                ' <a href="{}">edit or clear</a>',
                reverse("admin:conversations_agent_block_edit", args=[agent.pk, block.label]),
            )
            if editable
            else ""
        )
        rows.append(
            format_html(
                "<li><strong>{}</strong> ({} / {} characters{}){}<pre>{}</pre></li>",
                block.label,
                len(block.value),
                block.limit if block.limit is not None else "?",
                ", read-only" if block.read_only else "",
                edit,
                block.value,
            )
        )
    return format_html(
        "<p><strong>Memory blocks</strong></p><ul>{}</ul>",
        format_html_join("", "{}", ((r,) for r in rows)) if rows else "<li>none</li>",
    )


# --- People: their data, exported or erased --------------------------------------------------


admin.site.unregister(User)


@admin.register(User)
class PersonAdmin(UserAdmin):  # type: ignore[type-arg]
    actions = ["export_data", "erase_data"]

    @admin.action(description="Export their data (zip of conversations and personal memory)")
    def export_data(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponseBase | None:
        if queryset.count() != 1:
            self.message_user(request, "Export one person at a time.", messages.ERROR)
            return None
        person = queryset.get()
        archive = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
        try:
            exports.user_export_zip(gateway=get_gateway(), user=person, out=archive)
        except LettaError as exc:
            archive.close()
            self.message_user(request, f"Could not export: {exc}", messages.ERROR)
            return None
        audit_record(
            request=request, action=AuditEvent.Action.USER_EXPORT, target=person, owner=person
        )
        archive.seek(0)
        name = f"lettachat-{person.get_username()}-{timezone.now():%Y%m%d-%H%M%S}.zip"
        return FileResponse(
            archive, as_attachment=True, filename=name, content_type="application/zip"
        )

    @admin.action(description="Erase their data (in Letta and here), after a confirmation")
    def erase_data(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        if "confirmed" not in request.POST:
            return render(
                request,
                "staff/erase_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Erase people's data?",
                    "people": queryset,
                    "opts": self.model._meta,
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                },
            )
        deadline = time.monotonic() + settings.LETTACHAT_ERASE_SLICE_SECONDS
        for person in queryset:
            report = personal_data.user_erase(gateway=get_gateway(), user=person, deadline=deadline)
            audit_record(
                request=request,
                action=AuditEvent.Action.USER_ERASE,
                target=person,
                owner=person,
                detail={
                    "conversations_deleted": report.conversations_deleted,
                    "agents_deleted": report.agents_deleted,
                    "done": report.done,
                    "error": report.error,
                },
            )
            if report.done:
                self.message_user(
                    request,
                    f"{person.get_username()}: {report.conversations_deleted} conversation(s) and "
                    f"{report.agents_deleted} agent(s) deleted in Letta and here."
                    + (
                        f" Shared agents they used may still remember what they said: "
                        f"{', '.join(report.shared_agents)}."
                        if report.shared_agents
                        else ""
                    ),
                )
            else:
                self.message_user(
                    request,
                    f"{person.get_username()}: stopped ({report.error or 'out of time'}); left "
                    f"{len(report.conversations_left)} conversation(s) and "
                    f"{len(report.agents_left)} agent(s). Nothing still in Letta was deleted "
                    "here: run the action again (or manage.py user_erase) to finish.",
                    messages.ERROR,
                )
        return None
