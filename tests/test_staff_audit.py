"""The audit log: one function records who did what to whose data, from where; nothing changes or
deletes an event, in code or in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from staff.audit import audit_record
from staff.models import AppendOnly, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_member(make_user):
    return make_user("sam", is_staff=True, is_superuser=True)


def request_from(user, address="203.0.113.7", **meta):
    request = RequestFactory().get("/admin/", REMOTE_ADDR=address, **meta)
    request.user = user
    return request


def test_an_event_says_who_did_what_to_whose_data_from_where(staff_member, conversation, user):
    event = audit_record(
        request=request_from(staff_member),
        action=AuditEvent.Action.CONVERSATION_VIEW,
        target=conversation,
        detail={"page": 2},
    )
    event.refresh_from_db()
    assert (event.actor, event.actor_name) == (staff_member, "sam")
    assert event.action == "conversation.view"
    assert event.action_label == "Viewed a conversation"
    assert event.target_type == "conversations.conversation"
    assert event.target_id == conversation.letta_id
    assert event.target_repr == conversation.title
    assert (event.owner, event.owner_name) == (user, "alice")
    assert event.ip_address == "203.0.113.7"
    assert event.detail == {"page": 2}
    assert event.created_at is not None


def test_the_address_comes_from_trusted_proxies_only(staff_member, conversation, settings):
    forwarded = {"HTTP_X_FORWARDED_FOR": "198.51.100.1, 192.0.2.44"}
    request = request_from(staff_member, "10.0.0.2", **forwarded)
    settings.LETTACHAT_TRUSTED_PROXIES = 0  # a client can write anything in X-Forwarded-For
    assert audit_record(request=request, action="x", target=None).ip_address == "10.0.0.2"
    settings.LETTACHAT_TRUSTED_PROXIES = 1  # what the one proxy in front saw
    assert audit_record(request=request, action="x", target=None).ip_address == "192.0.2.44"


def test_an_event_outlives_the_accounts_it_names(staff_member, conversation, user):
    event = audit_record(
        request=request_from(staff_member),
        action=AuditEvent.Action.CONVERSATION_DELETE,
        target=conversation,
    )
    get_user_model().objects.filter(pk__in=[user.pk, staff_member.pk]).delete()
    event = AuditEvent.objects.get(pk=event.pk)
    assert (event.actor_name, event.owner_name, event.target_repr) == (
        "sam",
        "alice",
        conversation.title,
    )


def test_nothing_in_code_changes_or_deletes_an_event(staff_member, conversation):
    event = audit_record(request=request_from(staff_member), action="x", target=conversation)
    event.action = "nothing happened"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="nothing happened")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "x"


def test_the_admin_lists_and_searches_events_and_offers_no_add_change_or_delete(
    client, staff_member, conversation
):
    event = audit_record(
        request=request_from(staff_member),
        action=AuditEvent.Action.CONVERSATION_EXPORT,
        target=conversation,
    )
    audit_record(request=request_from(staff_member), action="usage.export", target=None)
    client.force_login(staff_member)
    listing = client.get(reverse("admin:staff_auditevent_changelist"), {"q": "alice"})
    assert listing.status_code == 200
    assert "Exported a conversation" in listing.content.decode()
    assert "Exported usage" not in listing.content.decode()
    change = reverse("admin:staff_auditevent_change", args=[event.pk])
    page = client.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # read-only
    assert client.post(change, {"action": "nothing"}).status_code == 403
    assert client.get(reverse("admin:staff_auditevent_add")).status_code == 403
    delete = reverse("admin:staff_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = client.post(
        reverse("admin:staff_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).get().action == "conversation.export"
