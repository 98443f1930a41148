"""Usage in the staff console: messages and tokens per person, per agent and per day, over a
period, on one page and as CSV (each CSV download is recorded in the audit log)."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from conversations import usage
from staff.audit import audit_record
from staff.models import AuditEvent, UsageReport

DEFAULT_DAYS = 30
REPORTS = {
    "person": ("Per person", "person", usage.usage_by_person),
    "agent": ("Per agent", "agent", usage.usage_by_agent),
    "day": ("Per day", "day", usage.usage_by_day),
}


def _period(request: HttpRequest) -> tuple[date, date]:
    """``since`` and ``until`` from the query (ISO dates); the last 30 days by default."""
    today = timezone.localdate()
    try:
        until = date.fromisoformat(request.GET.get("until", ""))
    except ValueError:
        until = today
    try:
        since = date.fromisoformat(request.GET.get("since", ""))
    except ValueError:
        since = until - timedelta(days=DEFAULT_DAYS - 1)
    return min(since, until), max(since, until)


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@admin.register(UsageReport)
class UsageAdmin(admin.ModelAdmin[UsageReport]):
    report_only = True  # one page and its CSV: no objects to add, change or delete

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.changelist_view), name="staff_usagereport_changelist"),
            path("csv/", view(self.csv_view), name="staff_usagereport_csv"),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        since, until = _period(request)
        reports = [
            {"by": by, "title": title, "key": key, "rows": compute(since=since, until=until)}
            for by, (title, key, compute) in REPORTS.items()
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "opts": self.opts,
            "since": since,
            "until": until,
            "reports": reports,
            "quota": usage.quota(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "staff/usage.html", context)

    def csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        by = request.GET.get("by", "")
        if by not in REPORTS:
            by = "person"
        _, key, compute = REPORTS[by]
        since, until = _period(request)
        rows = compute(since=since, until=until)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        name = f"lettachat-usage-per-{by}-{since.isoformat()}-to-{until.isoformat()}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        writer = csv.writer(response)
        head = [key, "agent_name"] if by == "agent" else [key]
        writer.writerow([*head, "messages", "prompt_tokens", "completion_tokens", "total_tokens"])
        for row in rows:
            first = [row.key, row.label] if by == "agent" else [row.key]
            writer.writerow(
                [_cell(v) for v in first]
                + [row.messages, row.prompt_tokens, row.completion_tokens, row.total_tokens]
            )
        audit_record(
            request=request, action=AuditEvent.Action.USAGE_EXPORT, target=None,
            detail={"by": by, "since": since.isoformat(), "until": until.isoformat(),
                    "rows": len(rows)},
        )  # fmt: skip
        return response
