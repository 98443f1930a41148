"""A person's data on request: a conversation as a file, everything as a zip, and erasing it all.

Against the scripted gateway (the real Letta server: tests/integration/test_privacy_letta.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from conversations import personal_data, services
from conversations.models import Agent, Conversation, Message, Run
from letta_gateway import AgentInfo, ConversationInfo, LettaUnavailable

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def template(personal_agent, fake_gateway) -> Agent:
    fake_gateway.agents.append(AgentInfo("agent-personal", "Tutor", "Teaches.", "m"))
    fake_gateway.set_blocks("agent-personal", human="Nothing known yet.")
    return personal_agent


def a_turn(
    conversation: Conversation,
    said: str,
    answer: str,
    *,
    at: datetime,
    found: str = "No results found.",
) -> None:
    """A finished turn as the relay leaves it: the person's message, a tool call and its return,
    the answer, and the run with its usage."""
    run = Run.objects.create(
        conversation=conversation,
        letta_run_id=f"run-{conversation.pk}-{at.minute}",
        status="done",
        stop_reason="end_turn",
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        context_tokens=900,
    )
    rows = [
        ("user", said, ""),
        ("tool_call", '{"query": "tea"}', "conversation_search"),
        ("tool_return", found, "success"),
        ("assistant", answer, ""),
    ]
    for i, (kind, content, name) in enumerate(rows):
        Message.objects.create(
            conversation=conversation,
            letta_id=f"message-{conversation.pk}-{at.minute}-{i}",
            message_type=kind,
            content=content,
            name=name,
            run_id=run.letta_run_id,
            created_at=at + timedelta(seconds=i),
        )


@pytest.fixture
def alices(make_conversation, user, fake_gateway) -> Conversation:
    conversation = make_conversation(user, summary="Tea plans", last_message_at=T0)
    a_turn(conversation, "I like **green** tea", "Noted: green tea.", at=T0)
    a_turn(conversation, "And fences", "Fine.", at=T0 + timedelta(minutes=1), found="```x```")
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, "agent-visible", "Tea plans", T0, None
    )
    return conversation


@pytest.fixture
def mallorys(make_conversation, other_user, fake_gateway) -> Conversation:
    conversation = make_conversation(other_user, summary="Mallory's own")
    a_turn(conversation, "MALLORY-SECRET-7", "Echo.", at=T0)
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, "agent-visible", "", T0, None
    )
    return conversation


# --- One conversation as a file ------------------------------------------------------------------


def test_a_conversation_downloads_as_json_with_every_message_in_order(alices, user):
    response = logged_in(user).get(reverse("conversation_download_json", args=[alices.letta_id]))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="Tea-plans-conv-')
    data = json.loads(response.content)
    assert data["conversation"]["id"] == alices.letta_id
    assert data["conversation"]["owner"] == "alice"
    kinds = [(m["type"], m["content"]) for m in data["messages"]]
    assert kinds == [
        ("user", "I like **green** tea"),
        ("tool_call", '{"query": "tea"}'),
        ("tool_return", "No results found."),
        ("assistant", "Noted: green tea."),
        ("user", "And fences"),
        ("tool_call", '{"query": "tea"}'),
        ("tool_return", "```x```"),
        ("assistant", "Fine."),
    ]
    assert data["messages"][1]["tool"] == "conversation_search"
    assert data["messages"][2]["status"] == "success"
    # Each turn's usage with its last message, and the runs themselves.
    assert data["messages"][3]["usage"]["total_tokens"] == 15
    assert data["messages"][0]["usage"] is None
    assert [r["total_tokens"] for r in data["runs"]] == [15, 15]


def test_a_conversation_downloads_as_markdown_a_person_can_read(alices, user):
    response = logged_in(user).get(
        reverse("conversation_download_markdown", args=[alices.letta_id])
    )
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("# Tea plans\n")
    assert (
        text.index("I like **green** tea") < text.index("Noted: green tea.") < text.index("Fine.")
    )
    assert "**Tool call: `conversation_search`**" in text
    assert "**Tool result (success)**" in text
    assert "_Usage: 15 tokens (prompt 10, completion 5) · context 900_" in text
    # A fence inside a message cannot close the export's own fences.
    assert "```\nNo results found.\n```" in text
    assert "````\n```x```\n````" in text


def test_someone_elses_conversation_does_not_download(alices, other_user):
    for name in ("conversation_download_json", "conversation_download_markdown"):
        response = logged_in(other_user).get(reverse(name, args=[alices.letta_id]))
        assert response.status_code == 404


# --- Everything as a zip -----------------------------------------------------------------------


def unzip(response) -> dict[str, str]:
    raw = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_the_export_holds_every_conversation_and_the_memory_of_ones_own_agents(
    alices, mallorys, template, user, fake_gateway
):
    own = services.conversation_create(gateway=fake_gateway, user=user, agent=template)
    a_turn(own, "Private tutoring", "Sure.", at=T0)
    fake_gateway.set_blocks(own.agent.letta_id, human="Likes green tea.")

    response = logged_in(user).get(reverse("my_data_export"))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="lettachat-alice-')
    files = unzip(response)

    conversations = sorted(n for n in files if n.startswith("conversations/"))
    assert len(conversations) == 4  # two conversations, each as .md and .json
    everything = "\n".join(files.values())
    for said in ("I like **green** tea", "Private tutoring"):
        assert said in everything
    assert "MALLORY-SECRET-7" not in everything and mallorys.letta_id not in everything
    memory = json.loads(files[f"memory/{own.agent.letta_id}.json"])
    assert memory["made_from"] == "Tutor"
    assert memory["blocks"] == [{"label": "human", "value": "Likes green tea.", "limit": 5000}]
    assert "README.txt" in files


def test_with_letta_down_the_export_says_so_and_gives_nothing_half_made(
    alices, template, user, fake_gateway
):
    services.conversation_create(gateway=fake_gateway, user=user, agent=template)
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in(user).get(reverse("my_data_export"))
    assert response.status_code == 503
    assert "could not be exported" in response.content.decode()


def test_the_export_command_writes_the_same_zip(alices, user, tmp_path, fake_gateway):
    out = tmp_path / "alice.zip"
    stdout = io.StringIO()
    call_command("user_export", "alice", output=str(out), stdout=stdout)
    assert "1 conversation(s) of alice written to" in stdout.getvalue()
    with zipfile.ZipFile(out) as archive:
        assert any("I like **green** tea" in archive.read(n).decode() for n in archive.namelist())


def test_the_export_command_refuses_an_unknown_person(db, fake_gateway):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("user_export", "nobody")


# --- Erasing -------------------------------------------------------------------------------------


@pytest.fixture
def alices_copy(template, user, fake_gateway) -> Conversation:
    return services.conversation_create(gateway=fake_gateway, user=user, agent=template)


def test_erasing_deletes_in_letta_then_here_and_leaves_others_alone(
    alices, alices_copy, mallorys, user, fake_gateway
):
    copy = alices_copy.agent
    report = personal_data.user_erase(gateway=fake_gateway, user=user)

    assert report.done
    assert (report.conversations_deleted, report.agents_deleted) == (2, 1)
    assert sorted(fake_gateway.deleted) == sorted([alices.letta_id, alices_copy.letta_id])
    assert fake_gateway.deleted_agents == [copy.letta_id]
    assert personal_data.identity_key(user) not in fake_gateway.identities
    assert not Conversation.objects.filter(owner=user).exists()
    assert not Message.objects.filter(conversation__owner=user).exists()
    assert not Agent.objects.filter(owner=user).exists()
    assert Conversation.objects.filter(pk=mallorys.pk).exists()
    assert report.shared_agents == ["Helper"]  # what cannot be erased: a shared agent's memory


def test_an_erase_stopped_by_letta_keeps_what_letta_still_has_and_the_next_run_finishes(
    alices, alices_copy, user, fake_gateway
):
    deleted = []

    def letta_goes_down_after_the_first(kind, letta_id):
        deleted.append(letta_id)
        fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")

    report = personal_data.user_erase(
        gateway=fake_gateway, user=user, on_progress=letta_goes_down_after_the_first
    )
    assert not report.done
    assert report.error == "The Letta server cannot be reached."
    assert report.conversations_deleted == 1
    # Nothing is deleted here that Letta still has: the mirror holds exactly what Letta holds.
    assert set(report.conversations_left) == set(fake_gateway.conversations) & {
        alices.letta_id,
        alices_copy.letta_id,
    }
    assert report.agents_left == [alices_copy.agent.letta_id]
    assert Agent.objects.filter(owner=user).exists()

    fake_gateway.down = None
    again = personal_data.user_erase(gateway=fake_gateway, user=user)
    assert again.done
    assert not Conversation.objects.filter(owner=user).exists()
    assert not Agent.objects.filter(owner=user).exists()


def test_an_erase_that_runs_out_of_time_says_what_is_left(alices, alices_copy, user, fake_gateway):
    report = personal_data.user_erase(gateway=fake_gateway, user=user, deadline=0.0)
    assert report.out_of_time and not report.done
    assert len(report.conversations_left) == 2


def test_conversations_letta_no_longer_knows_are_erased_here_too(alices, user, fake_gateway):
    fake_gateway.unknown.add(alices.letta_id)
    assert personal_data.user_erase(gateway=fake_gateway, user=user).done
    assert not Conversation.objects.filter(pk=alices.pk).exists()


def test_the_page_erases_only_after_the_confirmation_is_typed(alices, user, fake_gateway):
    client = logged_in(user)
    refused = client.post(reverse("my_data_erase"), {"confirm": "yes"})
    assert refused.status_code == 400
    assert "to confirm" in refused.content.decode()
    assert Conversation.objects.filter(pk=alices.pk).exists()

    done = client.post(reverse("my_data_erase"), {"confirm": "Delete my data"})
    assert done.status_code == 200
    page = done.content.decode()
    assert 'id="erase-done"' in page and "except what shared agents may remember" in page
    assert not Conversation.objects.filter(owner=user).exists()


def test_the_page_says_what_is_left_when_letta_fails(alices, user, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in(user).post(reverse("my_data_erase"), {"confirm": "delete my data"})
    assert response.status_code == 503
    page = response.content.decode()
    assert 'id="erase-unfinished"' in page
    assert "The Letta server cannot be reached." in page
    assert "press Delete again to finish" in page
    assert Conversation.objects.filter(pk=alices.pk).exists()


def test_the_your_data_page_says_what_cannot_be_erased(alices, user):
    page = logged_in(user).get(reverse("my_data")).content.decode()
    assert "1 conversation." in page
    assert 'id="erase-limits"' in page and "(Helper)" in page


def test_the_erase_command_asks_first(alices, user, fake_gateway, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Not confirmed: nothing was deleted"):
        call_command("user_erase", "alice", stdout=io.StringIO())
    assert Conversation.objects.filter(pk=alices.pk).exists()
    assert fake_gateway.deleted == []


def test_the_erase_command_shows_progress_and_finishes(alices, alices_copy, user, fake_gateway):
    stdout = io.StringIO()
    call_command("user_erase", "alice", yes=True, stdout=stdout)
    out = stdout.getvalue()
    assert "[1/3] deleted conversation" in out and "[3/3] deleted agent" in out
    assert "nothing of theirs is left in Letta or here" in out
    assert not Conversation.objects.filter(owner=user).exists()


def test_the_erase_command_fails_with_what_is_left(alices, user, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    with pytest.raises(CommandError, match="run the command again to finish") as failure:
        call_command("user_erase", "alice", yes=True, stdout=io.StringIO())
    assert alices.letta_id in str(failure.value)


@pytest.mark.django_db
def test_a_persons_letta_identity_is_theirs_alone_across_databases_on_one_letta(user):
    """Another database on the same Letta server (a staging copy, a database made again) has its
    own person with this pk: their identity must not be this person's."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model

    same_pk_elsewhere = get_user_model()(
        pk=user.pk, username="someone-else", date_joined=user.date_joined - timedelta(days=3)
    )
    assert personal_data.identity_key(user) != personal_data.identity_key(same_pk_elsewhere)
    reread = get_user_model().objects.get(pk=user.pk)
    assert personal_data.identity_key(reread) == personal_data.identity_key(user), "stable"
