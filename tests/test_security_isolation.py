"""No one reads, changes, stops or continues someone else's conversation: every URL, every method.

The suite walks the project's URL patterns (``get_resolver()``, recursively, the admin's too) and
the websocket routes, and holds a case for each. **A new URL without a case fails the suite**:
add one line to ``CASES`` saying what the URL names (a conversation, an agent, the person's own
things, or nothing: public) and which methods it answers; the generic checks do the rest:

- anonymous people are sent to log in (or get 405 for a method the URL does not answer);
- someone else's conversation, a conversation on an agent hidden from users, an agent hidden from
  users, and an id that does not exist all answer alike (404, or 405 for a method the URL does not
  answer), show none of the other person's text, change nothing and call Letta for nothing;
- parameters that point at someone else's things (a message id, a conversation pk) from one's own
  conversation leak nothing and change nothing of theirs;
- lists, search and pages show only one's own conversations;
- every state-changing request without a CSRF token is refused (403) and changes nothing;
- for one's own conversation the same request is *not* a 404 (so the 404s above are about
  ownership, not a broken case).

The admin: every admin URL refuses anonymous and non-staff people (a redirect to the admin login)
for every method, staff without permissions get 403 on model pages, and a superuser can open
each registered model's pages (so the refusals above are not broken URLs).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, path, reverse

from chat.routing import websocket_urlpatterns
from conversations.models import Agent, Approval, Conversation, Message, Run
from letta_gateway import ConversationInfo
from letta_gateway.fake import ScriptedGateway
from staff.models import AuditEvent, UsageReport

pytestmark = pytest.mark.django_db

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SAFE = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})
SECRET = "zqsecret"  # in everything of Bob's; must never reach Mallory
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    """Bob's things, Mallory's things, and what Mallory must never see or touch."""

    mallory: Any
    bob: Any
    agent: Agent  # visible to users
    hidden_agent: Agent
    bobs: Conversation  # on the visible agent, with messages
    bobs_archived: Conversation
    bobs_message: Message
    mallorys: Conversation
    mallorys_on_hidden: Conversation

    def foreign_targets(self, target: str) -> dict[str, str]:
        """Ids Mallory must not reach, by what they are."""
        if target == "conversation":
            return {
                "someone else's": self.bobs.letta_id,
                "someone else's archived": self.bobs_archived.letta_id,
                "own, on a hidden agent": self.mallorys_on_hidden.letta_id,
            }
        return {"hidden agent": self.hidden_agent.letta_id}


def _params_none(world: World, letta_id: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Case:
    """What a URL names and how it is called.

    target: "conversation" (its ``letta_id`` names one), "agent" (names an agent), "own" (names
    nothing; shows the person's own things), "public" (open to anyone: log in, log out).
    params(world, letta_id): query (safe methods) or form data (others) for a well-formed call.
    foreign_params(world): parameters pointing at someone else's things, sent with one's own
    conversation or a visible agent: nothing of theirs may show or change.
    """

    target: str
    methods: frozenset[str]
    params: Callable[[World, str], Mapping[str, Any]] = _params_none
    foreign_params: Callable[[World], Mapping[str, Any]] | None = None


def _older_than_last(world: World, letta_id: str) -> dict[str, Any]:
    last = Message.objects.filter(conversation__letta_id=letta_id).order_by("-pk").first()
    return {"before": last.pk if last else 1}


CASES: dict[str, Case] = {
    # Public.
    "login": Case("public", frozenset({"GET", "HEAD", "POST"})),
    "logout": Case("public", POST),
    # Probes for load balancers (lettachat/health.py): no login, nothing of anyone's.
    "healthz": Case("public", SAFE),
    "readyz": Case("public", SAFE),
    # The person's own things.
    "home": Case("own", SAFE),
    "letta_status": Case("own", SAFE),
    # An agent.
    "agent_detail": Case("agent", SAFE),
    "agent_archived": Case("agent", SAFE),
    "conversation_list_page": Case(
        "agent",
        SAFE,
        foreign_params=lambda w: {"current": w.bobs.pk, "view": "archived"},
    ),
    "conversation_search": Case("agent", SAFE, params=lambda w, _: {"q": "Lisbon"}),
    "conversation_create": Case("agent", POST),
    # A conversation.
    "conversation_detail": Case("conversation", SAFE),
    "message_list_older": Case(
        "conversation",
        SAFE,
        params=_older_than_last,
        foreign_params=lambda w: {"before": w.bobs_message.pk},
    ),
    "conversation_rename": Case(
        "conversation", POST, params=lambda w, _: {"summary": "renamed by mallory"}
    ),
    "conversation_archive": Case("conversation", POST),
    "conversation_unarchive": Case("conversation", POST),
    "conversation_delete": Case("conversation", POST),
    "conversation_fork": Case(
        "conversation", POST, foreign_params=lambda w: {"message": w.bobs_message.pk}
    ),
    "conversation_rewind": Case("conversation", POST, params=lambda w, _: {"action": "edit"}),
    "conversation_rewind_controls": Case("conversation", SAFE),
    "conversation_memory": Case("conversation", SAFE),
    "conversation_info": Case("conversation", SAFE),
    # Tool approvals: a forged or someone else's request id is refused (tests/test_approvals.py).
    "approval_answer": Case(
        "conversation",
        POST,
        params=lambda w, _: {"approval": 1, "decision": "deny", "reason": "no"},
    ),
    "conversation_download_markdown": Case("conversation", SAFE),
    "conversation_download_json": Case("conversation", SAFE),
    # The person's data as a whole (tests/test_personal_data.py checks what an export holds).
    "my_data": Case("own", SAFE),
    "my_data_export": Case("own", SAFE),
    "my_data_erase": Case("own", POST, params=lambda w, _: {"confirm": "delete my data"}),
}

# Websocket routes, by route string: what the route's kwarg names.
WEBSOCKET_CASES: dict[str, str] = {
    "ws/c/<str:conversation_id>/": "conversation",
}


# --- Walking the URL patterns ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str | None  # namespaced, e.g. "admin:conversations_message_change"
    route: str
    kwargs: tuple[str, ...]
    namespace: str  # "" for the project's own, "admin:" for the admin's


def _walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, route, inner)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}{entry.name}" if entry.name else None
            yield Route(name, route, tuple(_kwargs(route)), namespace)


def _kwargs(route: str) -> list[str]:
    """The keyword arguments of a route string, in both path() and re_path() syntax."""
    import re

    found = re.findall(r"<(?:\w+:)?(\w+)>", route) + re.findall(r"\(\?P<(\w+)>", route)
    return list(dict.fromkeys(found))


def project_routes() -> list[Route]:
    return [r for r in _walk(get_resolver().url_patterns) if not r.namespace.startswith("admin:")]


def admin_routes() -> list[Route]:
    return [r for r in _walk(get_resolver().url_patterns) if r.namespace == "admin:"]


def case_problems() -> list[str]:
    """What is wrong between the URL patterns and CASES: each a message for the URL's author."""
    routes = project_routes()
    problems = [
        f"Give the URL pattern {r.route!r} a name, so this suite can check it."
        for r in routes
        if r.name is None
    ]
    names = {r.name for r in routes if r.name}
    for name in sorted(names - CASES.keys()):
        problems.append(
            f"URL {name!r} has no case in tests/test_security_isolation.py: add one line to CASES "
            "saying what it names, Case('conversation'|'agent'|'own'|'public', methods, "
            "params=..., foreign_params=...); the suite then checks who may call it."
        )
    for name in sorted(CASES.keys() - names):
        problems.append(f"CASES names {name!r}, which is no longer a URL: remove it.")
    return problems


def test_every_url_has_a_case_in_this_suite():
    problems = case_problems()
    assert not problems, "\n".join(problems)


def _sneaky(request, letta_id):  # a view someone forgot to add a case for
    raise AssertionError("never called")


urlpatterns = [
    *__import__("lettachat.urls", fromlist=["urlpatterns"]).urlpatterns,
    path("c/<str:letta_id>/export/", _sneaky, name="conversation_export"),
    path("unnamed/", _sneaky),
]


def test_a_new_url_without_a_case_fails_the_suite(settings):
    settings.ROOT_URLCONF = __name__
    problems = case_problems()
    assert len(problems) == 2, problems
    assert "'unnamed/'" in problems[0]
    assert "'conversation_export' has no case" in problems[1]


def test_every_websocket_route_has_a_case_in_this_suite():
    routes = {str(p.pattern) for p in websocket_urlpatterns}
    missing = sorted(routes - WEBSOCKET_CASES.keys())
    assert not missing, (
        f"Websocket route(s) {missing} have no case: add them to WEBSOCKET_CASES and a check to "
        "test_a_websocket_route_refuses_someone_elses_things."
    )
    assert not WEBSOCKET_CASES.keys() - routes, "WEBSOCKET_CASES names routes that do not exist"


def test_the_walk_sees_the_admin_and_every_project_url():
    names = {r.name for r in _walk(get_resolver().url_patterns)}
    assert "admin:conversations_conversation_changelist" in names
    assert "admin:login" in names
    assert "conversation_detail" in names


# --- The world ---------------------------------------------------------------------------------


class WatchedGateway(ScriptedGateway):
    """The scripted gateway noting every call: a refused request must reach no one."""

    calls: ClassVar[list[str]] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and callable(value):
            WatchedGateway.calls.append(name)
        return value


@pytest.fixture
def gateway(settings) -> WatchedGateway:
    from letta_gateway import get_gateway

    settings.LETTA_GATEWAY = "tests.test_security_isolation.WatchedGateway"
    gateway = get_gateway()
    assert isinstance(gateway, WatchedGateway)
    WatchedGateway.calls = []
    return gateway


@pytest.fixture
def world(make_user, agent, hidden_agent, gateway, settings) -> World:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed
    mallory, bob = make_user("mallory"), make_user("bob")

    def conversation(owner, letta_id, summary, on_agent=agent, **extra):
        c = Conversation.objects.create(
            letta_id=letta_id, agent=on_agent, owner=owner, summary=summary, **extra
        )
        gateway.conversations[letta_id] = ConversationInfo(
            letta_id, on_agent.letta_id, summary, T0, None
        )
        return c

    def message(c, content, letta_id, kind="user"):
        return Message.objects.create(
            conversation=c, message_type=kind, content=content, letta_id=letta_id, created_at=T0
        )

    gateway.set_blocks(agent.letta_id, human="A person.")  # the admin's memory pages read it
    WatchedGateway.calls.clear()  # (setting the world up is not a request reaching Letta)
    bobs = conversation(bob, f"conv-bob-{SECRET}", f"Lisbon {SECRET} plans", last_message_at=T0)
    bobs_message = message(bobs, f"my {SECRET} password is hunter2", "message-bob-1")
    message(bobs, f"Noted {SECRET}.", "message-bob-2", kind="assistant")
    bobs_archived = conversation(
        bob, f"conv-bob-archived-{SECRET}", f"Lisbon {SECRET} old", archived=True
    )
    mallorys = conversation(mallory, "conv-mallory", "Lisbon, mine", last_message_at=T0)
    message(mallorys, "hello from mallory", "message-mallory-1")
    message(mallorys, "Echo: hello from mallory", "message-mallory-2", kind="assistant")
    on_hidden = conversation(mallory, "conv-mallory-hidden", "On hidden", on_agent=hidden_agent)
    return World(
        mallory=mallory,
        bob=bob,
        agent=agent,
        hidden_agent=hidden_agent,
        bobs=bobs,
        bobs_archived=bobs_archived,
        bobs_message=bobs_message,
        mallorys=mallorys,
        mallorys_on_hidden=on_hidden,
    )


def snapshot() -> list[tuple[str, list[dict[str, Any]]]]:
    """Every row of the app's models and every person's account, to show nothing changed."""
    rows = [
        (model.__name__, list(model.objects.order_by("pk").values()))
        for app in ("conversations", "staff")
        for model in apps.get_app_config(app).get_models()
    ]
    rows.append(
        (
            "User",
            list(
                get_user_model()
                .objects.order_by("pk")
                .values("pk", "username", "is_active", "is_staff", "password")
            ),
        )
    )
    return rows


def call(client: Client, method: str, url: str, params: Mapping[str, Any]):
    if method in ("GET", "HEAD", "OPTIONS"):
        query = f"?{urlencode(params)}" if params else ""
        return client.generic(method, url + query)
    return client.generic(
        method,
        url,
        urlencode(params, doseq=True),
        content_type="application/x-www-form-urlencoded",
    )


def url_of(name: str, letta_id: str | None) -> str:
    route = next(r for r in project_routes() if r.name == name)
    unknown = set(route.kwargs) - {"letta_id"}
    assert not unknown, (
        f"{name} takes {sorted(unknown)}: teach url_of() (tests/test_security_isolation.py) "
        "what to fill them with."
    )
    return reverse(name, kwargs={"letta_id": letta_id} if route.kwargs else {})


def body_text(response) -> str:
    """A response's text; a zip's (an export) is the text of every file in it."""
    if not hasattr(response, "text_for_tests"):  # a streamed body can be read only once
        raw = b"".join(response.streaming_content) if response.streaming else response.content
        if response.get("Content-Type", "") == "application/zip":
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                raw = b"\n".join(archive.read(n) for n in archive.namelist())
        response.text_for_tests = raw.decode(errors="replace")
    return response.text_for_tests


def leaks(response, *, location: bool = True) -> list[str]:
    """Bob's secrets in a response (its body, and where it redirects unless told otherwise)."""
    text = body_text(response)
    if location:
        text += response.get("Location", "")
    return [s for s in (SECRET, "hunter2") if s in text]


def expected_refusal(case: Case, method: str) -> int:
    return 404 if method in case.methods else 405


@pytest.fixture
def mallory_client(world) -> Client:
    client = Client()
    client.force_login(world.mallory)
    return client


# --- Anonymous people ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_anonymous_people_are_sent_to_log_in_for_every_method(name, client, world):
    case = CASES[name]
    letta_id = {
        "conversation": world.bobs.letta_id,
        "agent": world.agent.letta_id,
    }.get(case.target)
    url = url_of(name, letta_id)
    before = snapshot()
    for method in ALL_METHODS:
        response = call(client, method, url, case.params(world, letta_id or ""))
        if case.target == "public":
            assert response.status_code < 500, (name, method, response.status_code)
        elif method not in case.methods:
            assert response.status_code == 405, (name, method, response.status_code)
        else:
            assert response.status_code == 302, (name, method, response.status_code)
            assert response["Location"].startswith(reverse("login") + "?next="), (name, method)
        # (The login redirect names the URL asked for: that is the asker's own text.)
        assert not leaks(response, location=False), (name, method)
    assert snapshot() == before, f"{name}: an anonymous request changed something"
    if case.target != "public":
        assert WatchedGateway.calls == [], f"{name}: an anonymous request reached Letta"


# --- Someone else's things -----------------------------------------------------------------------

ADDRESSED = sorted(n for n, c in CASES.items() if c.target in ("conversation", "agent"))


def kept_private(response) -> bool:
    """No cache, shared or the browser's, keeps what a logged-in person was sent."""
    directives = {d.strip() for d in response.get("Cache-Control", "").split(",")}
    return {"private", "no-store"} <= directives


@pytest.mark.parametrize("name", ADDRESSED)
def test_someone_elses_or_a_hidden_thing_is_not_found_for_every_method(name, world, mallory_client):
    case = CASES[name]
    not_there = "conv-does-not-exist" if case.target == "conversation" else "agent-does-not-exist"
    before = snapshot()
    for method in ALL_METHODS:
        absent = call(mallory_client, method, url_of(name, not_there), case.params(world, ""))
        expected = expected_refusal(case, method)
        assert absent.status_code == expected, (name, method, "absent", absent.status_code)
        for what, letta_id in world.foreign_targets(case.target).items():
            response = call(
                mallory_client, method, url_of(name, letta_id), case.params(world, letta_id)
            )
            assert response.status_code == expected, (name, method, what, response.status_code)
            assert not leaks(response), (name, method, what)
            assert kept_private(response), (name, method, what)
    assert snapshot() == before, f"{name}: a refused request changed something"
    assert WatchedGateway.calls == [], f"{name}: a refused request reached Letta"


@pytest.mark.parametrize("name", ADDRESSED)
def test_the_same_request_on_ones_own_thing_is_served(name, world, mallory_client, make_user):
    """The control for the test above: its 404s come from ownership, not from a broken case."""
    case = CASES[name]
    for method in sorted(case.methods):
        if case.target == "conversation":
            # A fresh conversation each time (the request may delete or archive it).
            own = Conversation.objects.create(
                letta_id=f"conv-own-{method.lower()}",
                agent=world.agent,
                owner=world.mallory,
                summary="Mine",
            )
            Message.objects.create(
                conversation=own,
                message_type="user",
                content="hi",
                letta_id=f"m-{method}",
                created_at=T0,
            )
            letta_id = own.letta_id
        else:
            letta_id = world.agent.letta_id
        response = call(
            mallory_client, method, url_of(name, letta_id), case.params(world, letta_id)
        )
        assert response.status_code not in (403, 404, 405), (name, method, response.status_code)
        assert not leaks(response), (name, method)
        assert kept_private(response), (name, method, response.get("Cache-Control"))
        Conversation.objects.filter(letta_id__startswith="conv-own-").delete()


FOREIGN_PARAMS = sorted(n for n, c in CASES.items() if c.foreign_params is not None)


@pytest.mark.parametrize("name", FOREIGN_PARAMS)
def test_parameters_pointing_at_someone_elses_things_leak_and_change_nothing(
    name, world, mallory_client
):
    case = CASES[name]
    assert case.foreign_params is not None
    letta_id = world.mallorys.letta_id if case.target == "conversation" else world.agent.letta_id
    before = bobs_things(world)
    for method in sorted(case.methods):
        params = {**case.params(world, letta_id), **case.foreign_params(world)}
        response = call(mallory_client, method, url_of(name, letta_id), params)
        assert response.status_code < 500, (name, method, response.status_code)
        assert not leaks(response), (name, method)
    assert bobs_things(world) == before


def bobs_things(world: World) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        list(Conversation.objects.filter(owner=world.bob).order_by("pk").values()),
        list(Message.objects.filter(conversation__owner=world.bob).order_by("pk").values()),
    )


OWN_LISTINGS = sorted(
    n for n, c in CASES.items() if c.target in ("own", "agent") and c.methods & SAFE
)


@pytest.mark.parametrize("name", OWN_LISTINGS)
def test_pages_and_lists_show_only_ones_own_conversations(name, world, mallory_client):
    case = CASES[name]
    letta_id = world.agent.letta_id if case.target == "agent" else None
    url = url_of(name, letta_id)
    for params in [case.params(world, letta_id or ""), {"view": "archived"}, {"q": "Lisbon"}]:
        response = call(mallory_client, "GET", url, params)
        if response.status_code == 302:
            response = mallory_client.get(response["Location"])
        assert response.status_code == 200, (name, params, response.status_code)
        assert not leaks(response), (name, params)
        assert kept_private(response), (name, params)
        body = body_text(response)
        assert world.bobs.letta_id not in body and world.bobs_archived.letta_id not in body


def test_the_search_finds_ones_own_conversation_and_never_someone_elses(world, mallory_client):
    """Letta's summary search covers the whole agent; only the person's own results may show."""
    response = mallory_client.get(
        reverse("conversation_search", args=[world.agent.letta_id]), {"q": "Lisbon"}
    )
    body = response.content.decode()
    assert world.mallorys.letta_id in body
    assert "list_conversations" in WatchedGateway.calls, "Letta's search was asked"
    assert not leaks(response)


# --- CSRF ----------------------------------------------------------------------------------------

UNSAFE = sorted(
    (name, method)
    for name, case in CASES.items()
    for method in case.methods - {"GET", "HEAD", "OPTIONS"}
)


@pytest.mark.parametrize(("name", "method"), UNSAFE)
def test_every_state_changing_request_needs_a_csrf_token(name, method, world):
    case = CASES[name]
    client = Client(enforce_csrf_checks=True)
    if case.target != "public":
        client.force_login(world.mallory)
    letta_id = {
        "conversation": world.mallorys.letta_id,
        "agent": world.agent.letta_id,
    }.get(case.target)
    before = snapshot()
    params = {**case.params(world, letta_id or ""), "username": "mallory", "password": "x"}
    response = call(client, method, url_of(name, letta_id), params)
    assert response.status_code == 403, (name, method, response.status_code)
    assert snapshot() == before
    assert WatchedGateway.calls == []


def test_logging_in_never_sends_a_person_to_another_site(client, make_user):
    make_user("alice", "a-long-test-password")
    response = client.post(
        reverse("login") + "?next=https://evil.example/",
        {"username": "alice", "password": "a-long-test-password"},
    )
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]


# --- Websocket routes ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", sorted(WEBSOCKET_CASES))
async def test_a_websocket_route_refuses_someone_elses_things(
    route, make_user, agent, hidden_agent
):
    from channels.db import database_sync_to_async

    from chat.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
    from tests.websocket import open_socket

    assert WEBSOCKET_CASES[route] == "conversation"

    @database_sync_to_async
    def setup():
        mallory, bob = make_user("mallory"), make_user("bob")
        bobs = Conversation.objects.create(letta_id="conv-bob", agent=agent, owner=bob)
        hidden = Conversation.objects.create(
            letta_id="conv-mallory-hidden", agent=hidden_agent, owner=mallory
        )
        return mallory, bobs, hidden

    mallory, bobs, hidden = await setup()
    for letta_id, user, code in [
        (bobs.letta_id, None, CLOSE_UNAUTHENTICATED),
        (bobs.letta_id, mallory, CLOSE_NOT_FOUND),
        (hidden.letta_id, mallory, CLOSE_NOT_FOUND),
        ("conv-does-not-exist", mallory, CLOSE_NOT_FOUND),
    ]:
        communicator, _, _ = await open_socket(letta_id, user=user)
        assert (await communicator.receive_output())["code"] == code, (letta_id, user)
        await communicator.disconnect()


# --- The admin -----------------------------------------------------------------------------------


def _admin_model(name: str):
    """The registered model an admin URL name is about, if any."""
    short = name.removeprefix("admin:")
    for model in admin.site._registry:
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        if short.startswith(prefix):
            return model
    return None


def _admin_url(name: str, objects: dict[type, Any]) -> str:
    route = next(r for r in admin_routes() if r.name == name)
    kwargs: dict[str, Any] = {}
    for kwarg in route.kwargs:
        if kwarg in ("object_id", "id", "pk") and (model := _admin_model(name)) is not None:
            kwargs[kwarg] = objects[model].pk
        elif kwarg == "app_label":
            kwargs[kwarg] = "conversations"
        elif kwarg == "content_type_id":
            kwargs[kwarg] = ContentType.objects.get_for_model(Conversation).pk
        elif kwarg == "object_id":
            kwargs[kwarg] = objects[Conversation].pk
        elif kwarg == "label":  # a memory block of the agent
            kwargs[kwarg] = "human"
        else:
            pytest.fail(f"{name} takes {kwarg!r}: teach _admin_url() what to fill it with")
    return reverse(name, kwargs=kwargs)


ADMIN_NAMES = sorted(r.name for r in admin_routes() if r.name)
# Open to anyone by design: the login form itself.
ADMIN_PUBLIC = {"admin:login"}


@pytest.fixture
def admin_objects(world) -> dict[type, Any]:
    objects: dict[type, Any] = {
        Agent: world.agent,
        Conversation: world.bobs,
        Message: world.bobs_message,
        get_user_model(): world.bob,
        Group: Group.objects.create(name="team"),
        AuditEvent: AuditEvent.objects.create(
            action="conversation.view", target_repr=f"Lisbon {SECRET} plans", owner=world.bob
        ),
        # Login throttling's records (django-axes): staff read them and delete them to unlock.
        AccessAttempt: AccessAttempt.objects.create(
            username="bob", ip_address="127.0.0.9", user_agent="", http_accept="",
            path_info="/login/", get_data="", post_data="", failures_since_start=1,
        ),
        AccessLog: AccessLog.objects.create(
            username="bob", ip_address="127.0.0.9", user_agent="", http_accept="",
            path_info="/login/",
        ),
        AccessFailureLog: AccessFailureLog.objects.create(
            username="bob", ip_address="127.0.0.9", user_agent="", http_accept="",
            path_info="/login/",
        ),
        Run: Run.objects.create(
            conversation=world.bobs,
            user_message=world.bobs_message,
            letta_run_id="run-bob",
            status="done",
            total_tokens=42,
        ),
    }  # fmt: skip
    asked = Message.objects.create(
        conversation=world.bobs,
        message_type="approval",
        letta_id="m-ask-bob",
        name="conversation_search",
        content=f'{{"query": "{SECRET}"}}',
        created_at=T0,
    )
    objects[Approval] = Approval.objects.create(
        conversation=world.bobs, message=asked,
        tool_calls=[{"id": "call-1", "name": "conversation_search", "arguments": SECRET}],
    )  # fmt: skip
    objects[UsageReport] = UsageReport.objects.get(pk=objects[Run].pk)
    for model in admin.site._registry:
        assert model in objects, f"add an object of {model.__name__} to admin_objects"
    return objects


def test_every_registered_model_has_admin_urls_checked():
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        # A report (usage) is one page and its CSV: no object pages to check.
        views = ("changelist",) if getattr(model_admin, "report_only", False) else (
            "changelist", "change", "add", "delete", "history"
        )  # fmt: skip
        for view in views:
            assert f"admin:{meta.app_label}_{meta.model_name}_{view}" in ADMIN_NAMES


@pytest.mark.parametrize("name", sorted(set(ADMIN_NAMES) - ADMIN_PUBLIC))
def test_the_admin_refuses_anyone_not_staff_for_every_method(name, world, admin_objects):
    url = _admin_url(name, admin_objects)
    login = reverse("admin:login")
    mallory = Client()
    mallory.force_login(world.mallory)
    before = snapshot()
    for who, client in [("anonymous", Client()), ("not staff", mallory)]:
        for method in ("GET", "POST"):
            response = call(client, method, url, {"post": "yes", "summary": "x", "name": "x"})
            assert response.status_code == 302, (name, who, method, response.status_code)
            # Logging out of the admin without being in it just goes to the admin's index.
            allowed = (login, reverse("admin:index")) if name == "admin:logout" else (login,)
            assert response["Location"].startswith(allowed), (name, who, method)
            assert not leaks(response), (name, who, method)
    assert snapshot() == before


MODEL_VIEWS = sorted(
    n for n in ADMIN_NAMES if _admin_model(n) is not None and not n.endswith("_autocomplete")
)


@pytest.mark.parametrize("name", MODEL_VIEWS)
def test_staff_without_permissions_are_refused_model_pages(name, world, admin_objects, make_user):
    clerk = make_user("clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)
    before = snapshot()
    for method in ("GET", "POST"):
        response = call(client, method, _admin_url(name, admin_objects), {"post": "yes"})
        assert response.status_code == 403, (name, method, response.status_code)
    assert snapshot() == before


def _refused_by_design(name: str, request, objects: dict[type, Any]) -> bool:
    """An add or delete page of a model whose admin offers none (mirrored data, the audit log)."""
    model = _admin_model(name)
    model_admin = admin.site._registry[model]
    if name.endswith("_add"):
        return not model_admin.has_add_permission(request)
    if name.endswith("_delete"):
        return not model_admin.has_delete_permission(request, objects[model])
    return False


@pytest.mark.parametrize("name", MODEL_VIEWS)
def test_a_superuser_can_open_every_model_page(name, world, admin_objects, make_user, rf):
    boss = get_user_model().objects.create_superuser("boss", password="a-long-test-password")
    client = Client()
    client.force_login(boss)
    response = client.get(_admin_url(name, admin_objects))
    request = rf.get("/admin/")
    request.user = boss
    expected = 403 if _refused_by_design(name, request, admin_objects) else 200
    assert response.status_code == expected, (name, response.status_code)


UNNAMED_ADMIN = sorted(r.route for r in admin_routes() if r.name is None)


@pytest.mark.parametrize("route", UNNAMED_ADMIN)
def test_the_admins_unnamed_urls_refuse_anyone_not_staff(route, world, admin_objects):
    """The admin's old-style object URLs (a redirect) and its catch-all."""
    import re

    models = {f"admin/{m._meta.app_label}/{m._meta.model_name}/": m for m in admin.site._registry}
    model = next((m for prefix, m in models.items() if route.startswith(prefix)), None)
    if model is not None:
        url = "/" + route.replace("<path:object_id>", str(admin_objects[model].pk))
    else:
        assert route == "admin/(?P<url>.*)$", f"teach this test to fill {route}"
        url = "/admin/conversations/nothing-here/"
    assert not re.search(r"[<(]", url), url
    mallory = Client()
    mallory.force_login(world.mallory)
    for who, client in [("anonymous", Client()), ("not staff", mallory)]:
        response = client.get(url)
        assert response.status_code in (302, 404), (route, who, response.status_code)
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("admin:login")), (route, who)
        assert not leaks(response)
