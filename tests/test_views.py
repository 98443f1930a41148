"""Pages: who may see what, HTMX partials versus whole pages, Letta being down."""

from __future__ import annotations

import pytest
from django.urls import reverse

from conversations.models import Conversation, Message
from letta_gateway import LettaUnavailable
from tests.html_safety import assert_inert

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def test_anonymous_people_are_sent_to_log_in(client, conversation, agent):
    for url in [
        reverse("home"),
        reverse("agent_detail", args=[agent.letta_id]),
        reverse("conversation_detail", args=[conversation.letta_id]),
        reverse("letta_status"),
    ]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_an_htmx_request_without_a_session_sends_the_whole_page_to_log_in(client, conversation):
    """Not a login form swapped into the thread: the browser goes, and comes back after."""
    page = conversation.get_absolute_url()
    for url in (
        page,
        reverse("letta_status"),
        reverse("conversation_memory", args=[conversation.letta_id]),
    ):
        response = client.get(
            url, headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver{page}"}
        )
        assert response.status_code == 200
        assert response["HX-Redirect"] == f"/login/?next=%2Fc%2F{conversation.letta_id}%2F"
        assert response.content == b""
    response = client.post(
        reverse("conversation_rename", args=[conversation.letta_id]),
        {"summary": "x"},
        headers={"HX-Request": "true", "HX-Current-URL": "https://elsewhere.example/steal"},
    )
    assert response["HX-Redirect"] == "/login/?next=%2F", "never back to another site"


def test_without_htmx_the_login_redirect_is_an_ordinary_one(client, conversation):
    response = client.get(conversation.get_absolute_url())
    assert response.status_code == 302
    assert "HX-Redirect" not in response


def test_home_goes_to_the_first_visible_agent(logged_in, agent, hidden_agent):
    response = logged_in.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("agent_detail", args=[agent.letta_id])


def test_with_no_visible_agent_the_page_says_so(logged_in, hidden_agent):
    response = logged_in.get(reverse("home"))
    assert response.status_code == 200
    assert b"No agents yet" in response.content
    assert b"Internal" not in response.content


def test_a_hidden_agent_is_not_found(logged_in, hidden_agent):
    assert logged_in.get(reverse("agent_detail", args=[hidden_agent.letta_id])).status_code == 404


def test_the_sidebar_lists_only_my_conversations(
    logged_in, make_conversation, user, other_user, agent
):
    mine = make_conversation(user, summary="My trip")
    theirs = make_conversation(other_user, summary="Their secret")
    response = logged_in.get(reverse("agent_detail", args=[agent.letta_id]))
    assert mine.letta_id.encode() in response.content
    assert theirs.letta_id.encode() not in response.content
    assert b"Their secret" not in response.content


def test_someone_elses_conversation_is_not_found(logged_in, make_conversation, other_user):
    theirs = make_conversation(other_user)
    response = logged_in.get(reverse("conversation_detail", args=[theirs.letta_id]))
    assert response.status_code == 404
    response = logged_in.get(
        reverse("conversation_detail", args=[theirs.letta_id]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 404


def test_a_conversation_page_shows_its_history_escaped(logged_in, conversation):
    Message.objects.create(
        conversation=conversation,
        message_type="user",
        content="<img src=x onerror=alert(1)>",
        created_at="2026-01-01T00:00:00Z",
    )
    Message.objects.create(
        conversation=conversation,
        message_type="assistant",
        content="**Bold** [x](javascript:alert(1))",
        created_at="2026-01-01T00:00:01Z",
    )
    response = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    html = response.content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<strong>Bold</strong>" in html
    assert_inert(html.split('<div id="messages"', 1)[1].split('id="reply-status"', 1)[0])
    assert f'ws-connect="/ws/c/{conversation.letta_id}/"' in html


def test_switching_with_htmx_returns_the_thread_and_the_sidebar_out_of_band(
    logged_in, conversation
):
    response = logged_in.get(
        reverse("conversation_detail", args=[conversation.letta_id]), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="thread"')
    assert '<nav id="sidebar"' in html and 'hx-swap-oob="true"' in html
    assert "<html" not in html


def test_a_history_restore_gets_the_whole_page(logged_in, conversation):
    response = logged_in.get(
        reverse("conversation_detail", args=[conversation.letta_id]),
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )
    assert b"<html" in response.content


def test_new_conversation_with_htmx_creates_it_and_pushes_its_url(
    logged_in, agent, user, fake_gateway
):
    response = logged_in.post(
        reverse("conversation_create", args=[agent.letta_id]), headers={"HX-Request": "true"}
    )
    conversation = Conversation.objects.get()
    assert conversation.owner == user and conversation.agent == agent
    assert conversation.letta_id.startswith("conv-")
    assert response["HX-Push-Url"] == reverse("conversation_detail", args=[conversation.letta_id])
    assert f'ws-connect="/ws/c/{conversation.letta_id}/"' in response.content.decode()


def test_new_conversation_without_htmx_redirects(logged_in, agent, fake_gateway):
    response = logged_in.post(reverse("conversation_create", args=[agent.letta_id]))
    conversation = Conversation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("conversation_detail", args=[conversation.letta_id])


def test_new_conversation_needs_a_post_with_csrf(user, agent, fake_gateway):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    url = reverse("conversation_create", args=[agent.letta_id])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    assert not Conversation.objects.exists()


def test_new_conversation_on_a_hidden_agent_is_not_found(logged_in, hidden_agent, fake_gateway):
    response = logged_in.post(reverse("conversation_create", args=[hidden_agent.letta_id]))
    assert response.status_code == 404
    assert not Conversation.objects.exists()


def test_new_conversation_when_letta_is_down_says_so(logged_in, agent, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.post(
        reverse("conversation_create", args=[agent.letta_id]), headers={"HX-Request": "true"}
    )
    assert response["HX-Retarget"] == "#flash"
    assert b"cannot be reached" in response.content
    assert not Conversation.objects.exists()


def test_pages_load_when_letta_is_down_and_the_banner_says_so(
    logged_in, conversation, fake_gateway
):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    page = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    assert page.status_code == 200
    banner = logged_in.get(reverse("letta_status"))
    assert b"can't be reached" in banner.content


def test_the_banner_is_empty_when_letta_answers(logged_in, fake_gateway):
    assert logged_in.get(reverse("letta_status")).content == b""


def test_htmx_and_its_ws_extension_come_from_our_static_files(logged_in, agent):
    html = logged_in.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js"' in html
    assert '<script src="/static/django_htmx/ext/hx-ws-2.min.js"' in html
    assert "<script>" not in html  # no inline script
