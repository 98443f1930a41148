"""Thread management: the paged sidebar, older messages, rename, archive, delete, search, fork,
"Edit and resend"/"Regenerate", against the scripted gateway."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import fragments
from conversations import selectors, services
from conversations.models import Conversation, Message
from letta_gateway import ConversationInfo, LettaUnavailable, MessageInfo
from tests.conftest import require
from tests.html_safety import assert_inert

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _nothing_known_about_forks():
    cache.delete(services.FORK_POINT_CACHE_KEY)
    yield
    cache.delete(services.FORK_POINT_CACHE_KEY)


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def make_many(owner, agent, count, *, start=T0, archived=False, same_time_every=1, prefix="c"):
    """``count`` conversations, newest activity last; ``same_time_every`` share one timestamp."""
    return Conversation.objects.bulk_create(
        Conversation(
            letta_id=f"conv-{prefix}{owner.pk}-{archived:d}-{i}",
            agent=agent,
            owner=owner,
            summary=f"Thread {i}",
            archived=archived,
            last_message_at=start + timedelta(minutes=i // same_time_every),
        )
        for i in range(count)
    )


def sidebar_ids(html: str) -> list[str]:
    return re.findall(r'<li id="conv-([^"]+)"', html)


def more_url(html: str) -> str | None:
    found = re.search(r'id="sidebar-more"[^>]*hx-get="([^"]+)"', html, re.S)
    return found.group(1).replace("&amp;", "&") if found else None


def walk_sidebar(client, first_html: str) -> list[str]:
    ids = sidebar_ids(first_html)
    url = more_url(first_html)
    while url:
        html = client.get(url, headers=HTMX).content.decode()
        ids += sidebar_ids(html)
        url = more_url(html)
    return ids


def add_messages(conversation, count, *, same_time=False, start=T0):
    return Message.objects.bulk_create(
        Message(
            conversation=conversation,
            letta_id=f"message-{conversation.pk}-{i}",
            message_type="user" if i % 2 == 0 else "assistant",
            content=f"message number {i}",
            created_at=start if same_time else start + timedelta(seconds=i),
        )
        for i in range(count)
    )


# --- The sidebar, in cursor pages -----------------------------------------------------------------


def test_the_sidebar_shows_the_most_recent_first_and_loads_the_rest_page_by_page(
    logged_in, user, other_user, agent
):
    mine = make_many(user, agent, 120, same_time_every=7)  # ties on the timestamp across pages
    make_many(other_user, agent, 30)
    make_many(user, agent, 5, archived=True)
    page = logged_in.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()

    assert len(sidebar_ids(page)) == selectors.SIDEBAR_PAGE_SIZE
    assert 'hx-trigger="intersect once"' in page
    ids = walk_sidebar(logged_in, page)
    expected = sorted(mine, key=lambda c: (c.last_message_at, c.pk), reverse=True)
    assert ids == [c.letta_id for c in expected]  # each once, in order, nobody else's


def test_conversations_with_no_activity_yet_are_paged_too(logged_in, user, agent):
    dated = make_many(user, agent, 60)
    undated = Conversation.objects.bulk_create(
        Conversation(letta_id=f"conv-undated-{i}", agent=agent, owner=user) for i in range(60)
    )
    page = logged_in.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    ids = walk_sidebar(logged_in, page)
    assert sorted(ids) == sorted(c.letta_id for c in dated + undated)
    assert len(ids) == len(set(ids))


def test_each_sidebar_page_is_one_query_however_deep(user, agent, django_assert_num_queries):
    make_many(user, agent, 500)
    # Which agents' conversations the list shows (the agent, the person's copy): read once.
    agent_ids = selectors.agent_conversation_agents(user=user, agent=agent)
    cursor = None
    for _ in range(9):
        with django_assert_num_queries(1):
            page = selectors.conversation_page(
                user=user, agent=agent, cursor=cursor, agent_ids=agent_ids
            )
        cursor = page.next_cursor
    assert cursor is not None


@pytest.mark.production_stack  # PostgreSQL's plan (left out of the SQLite pass)
def test_a_deep_sidebar_page_of_5000_conversations_is_read_through_the_index(user, agent):
    require(connection.vendor == "postgresql", "not on PostgreSQL: its plan is untested")
    make_many(user, agent, 5000, same_time_every=3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_conversation")
    cursor_at_4000 = selectors._encode_sidebar_cursor(
        Conversation.objects.order_by(*selectors._sidebar_order())[4000]
    )
    with CaptureQueriesContext(connection) as queries:
        page = selectors.conversation_page(
            user=user, agent=agent, cursor=cursor_at_4000, agent_ids=[agent.pk]
        )
    assert len(page.conversations) == selectors.SIDEBAR_PAGE_SIZE
    (query,) = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT TEXT) {query['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "conv_sidebar_idx" in plan, plan
    assert "Sort" not in plan, plan  # read in index order, the whole set is never sorted
    # The cursor is an index condition: the 4,000 rows before it are never read; at most the
    # few that share its timestamp are.
    assert re.search(r"Index Cond: .*last_message_at <=", plan), plan
    removed = re.search(r"Rows Removed by Filter: (\d+)", plan)
    assert removed is None or int(removed.group(1)) <= 3, plan


def test_a_sidebar_page_with_a_bad_cursor_is_refused(logged_in, agent):
    url = reverse("conversation_list_page", args=[agent.letta_id])
    assert logged_in.get(url, {"cursor": "1; drop table"}).status_code == 400
    assert logged_in.get(url, {"cursor": "2026-01-01_5"}).status_code == 400


def test_a_sidebar_page_of_a_hidden_agent_is_not_found(logged_in, hidden_agent):
    url = reverse("conversation_list_page", args=[hidden_agent.letta_id])
    assert logged_in.get(url).status_code == 404


def test_a_sidebar_page_marks_the_open_conversation(logged_in, user, agent):
    convs = make_many(user, agent, 60)
    oldest = convs[0]
    page = logged_in.get(reverse("conversation_detail", args=[oldest.letta_id])).content.decode()
    html = logged_in.get(more_url(page), headers=HTMX).content.decode()
    assert re.search(
        rf'<li id="conv-{oldest.letta_id}"\s*>\s*<a[^>]*aria-current="page"', html, re.S
    )


def test_opening_a_thread_from_the_list_only_moves_the_current_mark(logged_in, user, agent):
    first, second = make_many(user, agent, 2)
    response = logged_in.get(
        reverse("conversation_detail", args=[second.letta_id]),
        headers={
            **HTMX,
            "X-Lettachat-Sidebar": "1",
            "HX-Current-URL": f"http://testserver/c/{first.letta_id}/",
        },
    )
    html = response.content.decode()
    assert '<nav id="sidebar"' not in html  # the loaded pages stay
    new = re.search(rf'<li id="conv-{second.letta_id}" hx-swap-oob="true">.*?</li>', html, re.S)
    old = re.search(rf'<li id="conv-{first.letta_id}" hx-swap-oob="true">.*?</li>', html, re.S)
    assert new and 'aria-current="page"' in new.group(0)
    assert old and "aria-current" not in old.group(0)


def test_the_archived_view_lists_only_archived_conversations(logged_in, user, agent):
    active = make_many(user, agent, 3)
    archived = make_many(user, agent, 2, archived=True)
    page = logged_in.get(reverse("agent_archived", args=[agent.letta_id])).content.decode()
    assert 'id="archived-list"' in page
    assert sorted(sidebar_ids(page)) == sorted(c.letta_id for c in archived)
    page = logged_in.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    assert sorted(sidebar_ids(page)) == sorted(c.letta_id for c in active)


# --- Older messages -------------------------------------------------------------------------------


def older_url(html: str) -> str | None:
    found = re.search(r'id="load-older".*?hx-get="([^"]+)"', html, re.S)
    return found.group(1).replace("&amp;", "&") if found else None


def shown_message_pks(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<article id="msg-(\d+)"', html)]


@pytest.mark.parametrize("same_time", [False, True], ids=["distinct-times", "one-timestamp"])
def test_older_messages_load_by_cursor_until_the_start(logged_in, conversation, same_time):
    messages = add_messages(conversation, 250, same_time=same_time)
    page = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    html = page.content.decode()
    assert "Load older messages" in html
    assert html.index('id="load-older"') < html.index("<article")  # at the top of #messages
    shown = shown_message_pks(html)
    assert shown == [m.pk for m in messages[-100:]]

    url = older_url(html)
    while url:
        older = logged_in.get(url, headers=HTMX).content.decode()
        assert_inert(older.split("</div>", 1)[-1])
        shown = shown_message_pks(older) + shown
        url = older_url(older)
    assert shown == [m.pk for m in messages]


def test_loading_older_messages_costs_the_same_however_long_the_history(
    logged_in, make_conversation, user
):
    counts = []
    for size in (150, 1500):
        conversation = make_conversation(user)
        messages = add_messages(conversation, size)
        url = reverse("message_list_older", args=[conversation.letta_id])
        with CaptureQueriesContext(connection) as queries:
            response = logged_in.get(url, {"before": messages[-1].pk}, headers=HTMX)
        assert len(shown_message_pks(response.content.decode())) == 100
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_short_thread_has_no_load_older_button(logged_in, conversation):
    add_messages(conversation, 100)
    html = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id])).content
    assert b"load-older" not in html


def test_older_messages_of_someone_elses_thread_are_not_found(
    logged_in, make_conversation, other_user
):
    theirs = make_conversation(other_user)
    messages = add_messages(theirs, 120)
    url = reverse("message_list_older", args=[theirs.letta_id])
    assert logged_in.get(url, {"before": messages[-1].pk}).status_code == 404


def test_older_messages_need_a_message_to_read_before(logged_in, conversation):
    url = reverse("message_list_older", args=[conversation.letta_id])
    assert logged_in.get(url).status_code == 400
    assert logged_in.get(url, {"before": "x"}).status_code == 400


# --- Every change is a POST, by the owner ---------------------------------------------------------

CHANGES = [
    "conversation_rename",
    "conversation_archive",
    "conversation_unarchive",
    "conversation_delete",
    "conversation_fork",
    "conversation_rewind",
]


@pytest.mark.parametrize("name", CHANGES)
def test_changing_someone_elses_conversation_is_not_found(
    logged_in, make_conversation, other_user, fake_gateway, name
):
    theirs = make_conversation(other_user, summary="Theirs")
    response = logged_in.post(
        reverse(name, args=[theirs.letta_id]), {"summary": "Mine now", "action": "edit"}
    )
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.summary, theirs.archived) == ("Theirs", False)
    assert fake_gateway.deleted == [] and fake_gateway.forks == []


@pytest.mark.parametrize("name", CHANGES)
def test_changes_need_a_post_with_csrf_and_a_login(user, conversation, fake_gateway, name):
    url = reverse(name, args=[conversation.letta_id])
    assert Client().post(url).status_code == 302  # to the login page
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(url).status_code == 405
    assert client.post(url, {"summary": "x", "action": "edit"}).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk, summary="").exists()


# --- Rename ---------------------------------------------------------------------------------------


def test_renaming_sets_the_summary_in_letta_and_in_the_mirror(
    logged_in, conversation, fake_gateway
):
    response = logged_in.post(
        reverse("conversation_rename", args=[conversation.letta_id]),
        {"summary": "  Trip   <b>plans</b> "},
        headers=HTMX,
    )
    html = response.content.decode()
    conversation.refresh_from_db()
    assert conversation.summary == "Trip <b>plans</b>"
    assert fake_gateway.conversations[conversation.letta_id].summary == "Trip <b>plans</b>"
    assert html.lstrip().startswith('<header id="thread-header"')
    assert "Trip &lt;b&gt;plans&lt;/b&gt;" in html and "<b>plans" not in html
    assert f'<li id="conv-{conversation.letta_id}" hx-swap-oob="true">' in html


def test_an_empty_title_is_refused_and_nothing_is_sent(logged_in, conversation, fake_gateway):
    response = logged_in.post(
        reverse("conversation_rename", args=[conversation.letta_id]),
        {"summary": "   "},
        headers=HTMX,
    )
    assert "A title cannot be empty." in response.content.decode()
    assert conversation.letta_id not in fake_gateway.conversations
    conversation.refresh_from_db()
    assert conversation.summary == ""


def test_a_rename_letta_refuses_keeps_the_old_title(
    logged_in, make_conversation, user, fake_gateway
):
    conversation = make_conversation(user, summary="Old title")
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.post(
        reverse("conversation_rename", args=[conversation.letta_id]),
        {"summary": "New title"},
        headers=HTMX,
    )
    assert response["HX-Retarget"] == "#flash"
    assert "Could not rename the conversation: The Letta server cannot be reached." in (
        response.content.decode()
    )
    conversation.refresh_from_db()
    assert conversation.summary == "Old title"


# --- Archive -------------------------------------------------------------------------------------


def test_archiving_is_kept_here_and_moves_the_thread_to_the_archived_list(
    logged_in, conversation, fake_gateway
):
    fake_gateway.down = LettaUnavailable("down")  # Letta ignores "archived": it is not asked
    url = reverse("conversation_archive", args=[conversation.letta_id])
    html = logged_in.post(url, headers=HTMX).content.decode()
    conversation.refresh_from_db()
    assert conversation.archived
    assert 'id="archived-badge"' in html and 'id="unarchive"' in html
    sidebar = html.split('<nav id="sidebar"', 1)[1]
    assert 'id="archived-list"' in sidebar and f'id="conv-{conversation.letta_id}"' in sidebar

    url = reverse("conversation_unarchive", args=[conversation.letta_id])
    html = logged_in.post(url, headers=HTMX).content.decode()
    conversation.refresh_from_db()
    assert not conversation.archived
    assert 'id="archive"' in html and 'id="conversation-list"' in html


def test_without_htmx_archiving_goes_back_to_the_thread(logged_in, conversation):
    response = logged_in.post(reverse("conversation_archive", args=[conversation.letta_id]))
    assert response.status_code == 302
    assert response["Location"] == conversation.get_absolute_url()


# --- Delete --------------------------------------------------------------------------------------


def test_deleting_removes_it_in_letta_then_here_and_goes_to_the_agent(
    logged_in, conversation, agent, fake_gateway
):
    add_messages(conversation, 3)
    response = logged_in.post(
        reverse("conversation_delete", args=[conversation.letta_id]), headers=HTMX
    )
    assert fake_gateway.deleted == [conversation.letta_id]
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()
    assert response["HX-Push-Url"] == reverse("agent_detail", args=[agent.letta_id])
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="thread"')
    assert f"conv-{conversation.letta_id}" not in html.split('id="found-', 1)[0]


def test_the_delete_button_asks_for_confirmation(logged_in, make_conversation, user):
    conversation = make_conversation(user, summary='Say "hi" <now>')
    html = logged_in.get(conversation.get_absolute_url()).content.decode()
    assert 'aria-controls="delete-dialog"' in html
    assert (
        '<h2 id="delete-dialog-title" class="dialog-title">Delete “'
        '<span class="delete-dialog-name">Say &quot;hi&quot; &lt;now&gt;</span>”?</h2>' in html
    )


def test_a_conversation_letta_no_longer_knows_is_deleted_here_anyway(
    logged_in, conversation, fake_gateway
):
    fake_gateway.unknown.add(conversation.letta_id)
    logged_in.post(reverse("conversation_delete", args=[conversation.letta_id]), headers=HTMX)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_when_letta_cannot_delete_it_the_conversation_stays(logged_in, conversation, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.post(
        reverse("conversation_delete", args=[conversation.letta_id]), headers=HTMX
    )
    assert "Could not delete the conversation" in response.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_deleting_an_archived_conversation_goes_back_to_the_archived_list(
    logged_in, make_conversation, user, agent, fake_gateway
):
    conversation = make_conversation(user, archived=True)
    response = logged_in.post(reverse("conversation_delete", args=[conversation.letta_id]))
    assert response["Location"] == reverse("agent_archived", args=[agent.letta_id])


# --- Search --------------------------------------------------------------------------------------


def search(client, agent, q):
    return client.get(
        reverse("conversation_search", args=[agent.letta_id]), {"q": q}, headers=HTMX
    ).content.decode()


def found_ids(html: str) -> set[str]:
    return set(re.findall(r'<li id="found-([^"]+)"', html))


def test_search_finds_my_conversations_by_title_and_by_message_text(
    logged_in, make_conversation, user, other_user, agent, hidden_agent, fake_gateway
):
    by_title = make_conversation(user, summary="Holiday in Lisbon")
    by_text = make_conversation(user, summary="Misc")
    Message.objects.create(
        conversation=by_text, message_type="assistant", content="lisbon has trams", created_at=T0
    )
    archived = make_conversation(user, summary="Old LISBON notes", archived=True)
    make_conversation(user, summary="Paris")
    theirs = make_conversation(other_user, summary="Lisbon secrets")
    elsewhere = make_conversation(user, summary="Lisbon elsewhere", on_agent=hidden_agent)

    html = search(logged_in, agent, "lisbon")
    assert found_ids(html) == {by_title.letta_id, by_text.letta_id, archived.letta_id}
    assert "archived</span>" in html
    assert theirs.letta_id not in html and elsewhere.letta_id not in html


def test_search_also_asks_letta_for_titles_it_keeps(
    logged_in, make_conversation, user, other_user, agent, fake_gateway
):
    mine = make_conversation(user, summary="Untitled here")
    theirs = make_conversation(other_user, summary="Also untitled")
    for c in (mine, theirs):
        fake_gateway.conversations[c.letta_id] = ConversationInfo(
            c.letta_id, agent.letta_id, "Quarterly report", T0, None
        )
    html = search(logged_in, agent, "Quarterly")
    assert found_ids(html) == {mine.letta_id}  # Letta's answer is narrowed to my own


def test_search_works_from_the_mirror_when_letta_is_down(
    logged_in, make_conversation, user, agent, fake_gateway
):
    mine = make_conversation(user, summary="Budget")
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    html = search(logged_in, agent, "budget")
    assert found_ids(html) == {mine.letta_id}
    assert "Titles kept in Letta could not be searched" in html


def test_search_results_are_escaped_and_an_empty_query_hides_them(
    logged_in, make_conversation, user, agent, fake_gateway
):
    make_conversation(user, summary="<img src=x onerror=alert(1)>")
    html = search(logged_in, agent, "<img")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Matching “&lt;img”" in html
    assert_inert(html)
    assert 'id="search-results" class="search-results" hidden' in search(logged_in, agent, "  ")


def test_search_works_without_javascript_too(
    logged_in, make_conversation, user, agent, fake_gateway
):
    mine = make_conversation(user, summary="Budget")
    html = logged_in.get(
        reverse("conversation_search", args=[agent.letta_id]), {"q": "budget"}
    ).content.decode()
    assert "<html" in html and found_ids(html) == {mine.letta_id}


# --- Fork ----------------------------------------------------------------------------------------


def letta_thread(conversation_id: str, count: int) -> list[MessageInfo]:
    infos = [MessageInfo(f"message-sys-{conversation_id}", "system", "You are…", T0)]
    for i in range(count):
        kind = "user" if i % 2 == 0 else "assistant"
        infos.append(
            MessageInfo(
                f"message-{i}", kind, f"{kind} {i}", T0 + timedelta(seconds=i), otid=f"otid-{i}"
            )
        )
    return infos


def mirror(conversation, count):
    return Message.objects.bulk_create(
        Message(
            conversation=conversation,
            letta_id=f"message-{i}",
            otid=f"otid-{i}",
            message_type="user" if i % 2 == 0 else "assistant",
            content=f"{'user' if i % 2 == 0 else 'assistant'} {i}",
            created_at=T0 + timedelta(seconds=i, milliseconds=500),
        )
        for i in range(count)
    )


def test_forking_copies_what_letta_holds_and_opens_the_copy(
    logged_in, make_conversation, user, fake_gateway
):
    origin = make_conversation(user, summary="Planning")
    fake_gateway.stored[origin.letta_id] = letta_thread(origin.letta_id, 4)
    mirrored = mirror(origin, 4)
    Message.objects.create(  # lettachat's own note: not in Letta, so not in the fork
        conversation=origin, message_type="error", content="The reply was stopped.", created_at=T0
    )

    response = logged_in.post(reverse("conversation_fork", args=[origin.letta_id]), headers=HTMX)

    fork = Conversation.objects.exclude(pk=origin.pk).get()
    assert (fork.owner, fork.agent, fork.forked_from, fork.forked_at_message) == (
        user,
        origin.agent,
        origin,
        None,
    )
    assert fork.title == "Planning (fork)"
    assert fake_gateway.forks == [
        {"origin": origin.letta_id, "message_id": None, "fork": fork.letta_id}
    ]
    copied = list(fork.messages.order_by("created_at", "id"))
    assert [(m.letta_id, m.message_type, m.content, m.otid) for m in copied] == [
        (m.letta_id, m.message_type, m.content, m.otid) for m in mirrored
    ]
    assert [m.created_at for m in copied] == [m.created_at for m in mirrored]
    assert response["HX-Push-Url"] == fork.get_absolute_url()
    html = response.content.decode()
    assert f'ws-connect="/ws/c/{fork.letta_id}/"' in html
    assert "Forked from" in html and origin.get_absolute_url() in html
    # The origin is untouched.
    assert origin.messages.count() == 5


def test_a_fork_of_a_long_thread_is_read_in_cursor_pages(
    logged_in, make_conversation, user, fake_gateway, monkeypatch
):
    origin = make_conversation(user)
    fake_gateway.stored[origin.letta_id] = letta_thread(origin.letta_id, 250)
    calls = []

    def paged(*, conversation_id, after=None, limit=100):
        calls.append(after)
        stored = fake_gateway.stored[conversation_id]
        ids = [m.letta_id for m in stored]
        start = ids.index(after) + 1 if after else 0
        return stored[start : start + limit]

    monkeypatch.setattr(fake_gateway, "list_messages", paged)
    logged_in.post(reverse("conversation_fork", args=[origin.letta_id]), headers=HTMX)
    fork = Conversation.objects.exclude(pk=origin.pk).get()
    assert fork.messages.count() == 250
    assert calls == [None, "message-98", "message-198"]


def test_forking_at_a_message_on_a_server_that_ignores_it_says_so_and_keeps_nothing(
    logged_in, make_conversation, user, fake_gateway
):
    origin = make_conversation(user)
    fake_gateway.stored[origin.letta_id] = letta_thread(origin.letta_id, 4)
    point = mirror(origin, 4)[1]

    response = logged_in.post(
        reverse("conversation_fork", args=[origin.letta_id]), {"message": point.pk}, headers=HTMX
    )

    html = response.content.decode()
    assert response["HX-Retarget"] == "#flash"
    assert "This Letta server cannot fork a conversation at a message" in html
    assert "Nothing was forked." in html
    assert not Conversation.objects.exclude(pk=origin.pk).exists()
    (made,) = fake_gateway.forks
    assert made["message_id"] == "message-1"
    assert fake_gateway.deleted == [made["fork"]]  # the whole copy Letta made is removed
    assert services.conversation_fork_point_known() is False
    # ...and the buttons that need it now say they are unavailable.
    assert 'id="rewind-controls"' in html and "disabled" in html


def test_forking_at_a_message_where_the_server_honours_it(
    logged_in, make_conversation, user, fake_gateway
):
    fake_gateway.fork_honours_message_id = True
    origin = make_conversation(user)
    fake_gateway.stored[origin.letta_id] = letta_thread(origin.letta_id, 6)
    point = mirror(origin, 6)[3]

    logged_in.post(
        reverse("conversation_fork", args=[origin.letta_id]), {"message": point.pk}, headers=HTMX
    )

    fork = Conversation.objects.exclude(pk=origin.pk).get()
    assert fork.forked_at_message == point
    assert list(fork.messages.order_by("created_at", "id").values_list("letta_id", flat=True)) == [
        f"message-{i}" for i in range(4)
    ]
    assert services.conversation_fork_point_known() is True


def test_a_fork_point_must_be_a_message_of_the_thread(
    logged_in, make_conversation, user, fake_gateway
):
    origin = make_conversation(user)
    elsewhere = mirror(make_conversation(user), 2)[0]
    url = reverse("conversation_fork", args=[origin.letta_id])
    assert logged_in.post(url, {"message": elsewhere.pk}, headers=HTMX).status_code == 400
    assert logged_in.post(url, {"message": "x"}, headers=HTMX).status_code == 400
    assert fake_gateway.forks == []


def test_a_failed_fork_says_so(logged_in, conversation, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.post(
        reverse("conversation_fork", args=[conversation.letta_id]), headers=HTMX
    )
    assert "Could not fork the conversation" in response.content.decode()
    assert Conversation.objects.count() == 1


def test_the_origin_can_be_deleted_and_its_forks_keep_their_messages(
    logged_in, make_conversation, user, fake_gateway
):
    origin = make_conversation(user)
    fake_gateway.stored[origin.letta_id] = letta_thread(origin.letta_id, 2)
    mirror(origin, 2)
    logged_in.post(reverse("conversation_fork", args=[origin.letta_id]), headers=HTMX)
    logged_in.post(reverse("conversation_delete", args=[origin.letta_id]), headers=HTMX)
    fork = Conversation.objects.get()
    assert fork.forked_from is None and fork.messages.count() == 2


# --- Edit and resend / Regenerate -----------------------------------------------------------------


def test_on_a_server_that_cannot_fork_at_a_message_edit_and_regenerate_are_unavailable(
    logged_in, make_conversation, user, fake_gateway
):
    conversation = make_conversation(user)
    mirror(conversation, 2)
    cache.set(services.FORK_POINT_CACHE_KEY, False)
    html = logged_in.get(conversation.get_absolute_url()).content.decode()
    controls = html.split('id="rewind-controls"', 1)[1].split("</div>", 1)[0]
    assert re.search(r'<button[^>]*id="edit-last"[^>]*disabled', controls)
    assert re.search(r'<button[^>]*id="regenerate"[^>]*disabled', controls)
    assert "cannot fork a conversation at a message" in controls
    assert "hx-post" not in controls


def test_whether_the_server_can_fork_at_a_message_is_learnt_after_the_page_loads(
    logged_in, make_conversation, user, fake_gateway, monkeypatch
):
    conversation = make_conversation(user)
    mirror(conversation, 2)
    page = logged_in.get(conversation.get_absolute_url()).content.decode()
    controls_url = reverse("conversation_rewind_controls", args=[conversation.letta_id])
    assert f'hx-get="{controls_url}" hx-trigger="load"' in page

    monkeypatch.setattr(fake_gateway, "health", lambda: "0.16.8")
    html = logged_in.get(controls_url, headers=HTMX).content.decode()
    assert re.search(r'<button[^>]*id="edit-last"[^>]*disabled', html)
    assert "hx-trigger" not in html
    page = logged_in.get(conversation.get_absolute_url()).content.decode()
    assert controls_url not in page  # known now: no need to ask again


def test_with_no_message_of_mine_there_is_nothing_to_edit(logged_in, conversation):
    html = logged_in.get(conversation.get_absolute_url()).content.decode()
    assert 'id="rewind-controls"' not in html


def test_edit_and_resend_on_a_server_that_cannot_says_so_and_forks_nothing(
    logged_in, make_conversation, user, fake_gateway
):
    conversation = make_conversation(user)
    mirror(conversation, 4)
    cache.set(services.FORK_POINT_CACHE_KEY, False)
    response = logged_in.post(
        reverse("conversation_rewind", args=[conversation.letta_id]),
        {"action": "edit"},
        headers=HTMX,
    )
    assert "cannot fork a conversation at a message" in response.content.decode()
    assert fake_gateway.forks == []


@pytest.mark.parametrize("action", ["edit", "regenerate"])
def test_edit_and_resend_where_the_server_can_opens_a_fork_before_my_last_message(
    logged_in, make_conversation, user, fake_gateway, action
):
    fake_gateway.fork_honours_message_id = True
    conversation = make_conversation(user)
    fake_gateway.stored[conversation.letta_id] = letta_thread(conversation.letta_id, 4)
    messages = mirror(conversation, 4)  # user 0, assistant 1, user 2, assistant 3

    response = logged_in.post(
        reverse("conversation_rewind", args=[conversation.letta_id]),
        {"action": action},
        headers=HTMX,
    )

    fork = Conversation.objects.exclude(pk=conversation.pk).get()
    assert fork.forked_at_message == messages[1]
    assert fork.messages.count() == 2
    html = response.content.decode()
    assert response["HX-Push-Url"] == fork.get_absolute_url()
    assert re.search(r'<textarea id="composer-input"[^>]*>user 2</textarea>', html, re.S)
    assert f'id="rewind-pending" data-rewind="{action}"' in html


# --- The sidebar fragment for the reply runner, and the keyboard ----------------------------------


def test_the_moved_to_top_fragment_removes_the_item_and_puts_it_first(make_conversation, user):
    conversation = make_conversation(user, summary="<b>Hot</b> thread")
    html = fragments.sidebar_item_moved_to_top(conversation)
    first, second = html.split("</li>", 1)
    assert first == f'<li id="conv-{conversation.letta_id}" hx-swap-oob="delete">'
    assert second.startswith('<div hx-swap-oob="afterbegin:#conversation-list">')
    assert f'<li id="conv-{conversation.letta_id}" >' in second
    assert "&lt;b&gt;Hot&lt;/b&gt; thread" in second and 'aria-current="page"' in second
    assert_inert(html)
    conversation.archived = True
    assert "afterbegin:#archived-list" in fragments.sidebar_item_moved_to_top(conversation)


def test_the_page_offers_a_new_conversation_shortcut_and_says_so(logged_in, agent):
    html = logged_in.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    assert 'aria-keyshortcuts="Alt+N"' in html
    assert "Alt+N: new conversation" in html
    assert '<script src="/static/js/threads.js" defer></script>' in html


def test_the_admin_shows_where_a_fork_came_from_without_listing_every_message(
    client, make_user, make_conversation, user
):
    origin = make_conversation(user, summary="Origin")
    point = mirror(origin, 2)[1]
    fork = make_conversation(user, summary="Copy", forked_from=origin, forked_at_message=point)
    client.force_login(make_user("staff", is_staff=True, is_superuser=True))
    html = client.get(reverse("admin:conversations_conversation_change", args=[fork.pk]))
    html = html.content.decode()
    assert "Origin" in html and "assistant 1" in html
    assert 'name="forked_at_message"' not in html and 'name="forked_from"' not in html
