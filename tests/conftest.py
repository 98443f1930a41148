"""Shared fixtures, the real Letta server and lettachat server processes among them (the browser
is in ``tests/browser/conftest.py``, the server process in ``tests/live.py``).

The project's own harness installs (once) and starts the local Letta server, with its key; set
``LETTA_TEST_URL`` (and ``LETTA_TEST_API_KEY``) to test against a server you run yourself."""

from __future__ import annotations

import asyncio
import asyncio.runners
import os
import sys
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import SyncToAsync
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections

from conversations.models import Agent, Conversation
from devtools.local_letta import harness
from letta_gateway import get_gateway
from letta_gateway.client import LettaGateway
from letta_gateway.fake import ScriptedGateway
from lettachat.aio import db_close_connections
from tests.live import LiveServer, server_env

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when a real part is missing, except in CI where a missing part fails the run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, dropped at the end once the database threads let go of it, and the
    connection pool of this process has closed its connections (a pool keeps some open, and
    PostgreSQL refuses to drop a database "being accessed by other users")."""
    yield
    with django_db_blocker.unblock():
        db_close_connections()
        # ...and asgiref's one thread for thread-sensitive calls (``database_sync_to_async`` in
        # the async tests), which channels' communicator keeps from closing its connection.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
        for connection in connections.all():
            if close_pool := getattr(connection, "close_pool", None):
                close_pool()


@pytest.fixture
def fragments_over_pubsub(settings):
    """Page fragments over Redis pub/sub (``LETTACHAT_FRAGMENTS_PUBSUB``, the default with Redis),
    whatever the environment says."""
    require(bool(settings.REDIS_URL), "REDIS_URL is not set: Redis pub/sub is untested")
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        settings.FRAGMENTS_LAYER: {
            "BACKEND": "lettachat.layers.PubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": settings.REDIS_URL, "socket_timeout": 15}],
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "lettachat") + ".fragments.",
            },
        },
    }
    channel_layers.backends.clear()


@pytest.fixture
def fragments_over_list(settings):
    """Page fragments over the default layer (``LETTACHAT_FRAGMENTS_PUBSUB=false``)."""
    settings.CHANNEL_LAYERS = {
        name: config
        for name, config in settings.CHANNEL_LAYERS.items()
        if name != settings.FRAGMENTS_LAYER
    }
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer per test: each test has its own event loop, and channels_redis binds its
    receive locks to the loop that first used them."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


class FewIterationsPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's hasher with few iterations: the tests make hundreds of users, and each hash took
    0.45 s. The count is part of the hash, so a server process of the tests (with the real
    hasher) still checks these passwords (and hashes them again, in full, at login)."""

    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashes(settings):
    settings.PASSWORD_HASHERS = [
        "tests.conftest.FewIterationsPBKDF2PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]


@pytest.fixture(autouse=True)
def no_background_reaper(settings):
    """Tests take runs over when they say so (``reaper.reap_once``); the live servers of the
    browser and process tests run the reaper as in production."""
    settings.LETTACHAT_REAPER = False


@pytest.fixture
def fake_gateway(settings) -> ScriptedGateway:
    settings.LETTA_GATEWAY = "letta_gateway.fake.ScriptedGateway"
    gateway = get_gateway()
    assert isinstance(gateway, ScriptedGateway)
    return gateway


@pytest.fixture
def make_user(db):
    def make(username: str = "alice", password: str = "a-long-test-password", **extra):
        return get_user_model().objects.create_user(username=username, password=password, **extra)

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("mallory")


@pytest.fixture
def agent(db) -> Agent:
    """A shared agent: conversations made with ``make_conversation`` are on it directly."""
    return Agent.objects.create(
        letta_id="agent-visible", name="Helper", visible_to_users=True, sharing="shared"
    )


@pytest.fixture
def hidden_agent(db) -> Agent:
    return Agent.objects.create(
        letta_id="agent-hidden", name="Internal", visible_to_users=False, sharing="shared"
    )


@pytest.fixture
def personal_agent(db) -> Agent:
    """A personal agent: a template each person gets their own copy of."""
    return Agent.objects.create(
        letta_id="agent-personal", name="Tutor", visible_to_users=True, sharing="personal"
    )


@pytest.fixture
def make_conversation(agent):
    counter = iter(range(1, 10_000))

    def make(owner, *, on_agent: Agent | None = None, **extra) -> Conversation:
        return Conversation.objects.create(
            letta_id=f"conv-test-{next(counter)}", agent=on_agent or agent, owner=owner, **extra
        )

    return make


@pytest.fixture
def conversation(make_conversation, user) -> Conversation:
    return make_conversation(user)


@pytest.fixture
def start_server(transactional_db, tmp_path) -> Iterator[Callable[..., LiveServer]]:
    """Start a lettachat server process (daphne) on the test database (and the test's Redis
    layer, when the tests use one). The fake gateway (no Letta needed) and an hourly session
    re-check, unless told otherwise."""
    servers: list[LiveServer] = []

    def start(**extra: str) -> LiveServer:
        env = server_env(
            tmp_path,
            **{
                "LETTA_GATEWAY": "letta_gateway.fake.ScriptedGateway",  # no Letta needed here
                "LETTACHAT_SESSION_CHECK_SECONDS": "3600",
                **extra,
            },
        )
        server = LiveServer(env, tmp_path / f"daphne-{len(servers)}.log")
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# --- The real Letta server ---------------------------------------------------------------------

TEST_AGENT_NAME = "lettachat-tests"


@pytest.fixture(scope="session")
def letta_url() -> str:
    url = os.environ.get("LETTA_TEST_URL", "")
    if not url:
        try:
            url = harness.start()
        except Exception as exc:
            require(False, f"the local Letta server did not start: {exc}")
    require(harness.is_healthy(url), f"no Letta server answers at {url}")
    return url


@pytest.fixture(scope="session")
def letta_api_key(letta_url) -> str:
    """The key of the real server: the harness's own (Letta's secure mode), or
    ``LETTA_TEST_API_KEY`` for a server given by ``LETTA_TEST_URL``."""
    key = os.environ.get("LETTA_TEST_API_KEY", "")
    if not key and letta_url.rstrip("/") == harness.base_url():
        key = harness.api_key()
    return key


@pytest.fixture(scope="session")
def letta_agent_info(letta_url, letta_api_key):
    """One agent on the real server for the whole run (made once, reused by later runs)."""
    gateway = LettaGateway(base_url=letta_url, api_key=letta_api_key)
    for info in gateway.list_agents():
        if info.name == TEST_AGENT_NAME:
            return info
    return gateway.create_agent(
        name=TEST_AGENT_NAME,
        model=harness.MODEL_HANDLE,
        description="Used by lettachat's tests.",
        blocks={"human": "A tester.", "persona": "A patient test agent."},
    )


@pytest.fixture
def letta_gateway(settings, letta_url, letta_api_key) -> LettaGateway:
    settings.LETTA_BASE_URL = letta_url
    settings.LETTA_API_KEY = letta_api_key
    settings.LETTA_GATEWAY = "letta_gateway.client.LettaGateway"
    gateway = get_gateway()
    assert isinstance(gateway, LettaGateway)
    return gateway


@pytest.fixture
def letta_agent(db, letta_agent_info) -> Agent:
    return Agent.objects.create(
        letta_id=letta_agent_info.letta_id,
        name=letta_agent_info.name,
        model=letta_agent_info.model,
        visible_to_users=True,
        sharing="shared",  # conversations are made on it directly
    )


# A test's event loop closes by cancelling what is left and waiting for it. A task that never
# ends there (a channels_redis receive cancelled mid-pop can stay "cancelling" for ever) would hang
# the whole run with no word of which task it was: name it, and stop waiting, which fails the test.
_cancel_all_tasks = asyncio.runners._cancel_all_tasks
CANCEL_GRACE_SECONDS = 15


def _cancel_all_tasks_or_name_the_stuck(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]

    def name_the_stuck() -> None:
        for task in tasks:
            if not task.done():
                print(f"\nstill cancelling after {CANCEL_GRACE_SECONDS} s:", task, file=sys.stderr)
                task.print_stack(file=sys.stderr)
        loop.stop()  # run_until_complete raises: the test fails instead of the run hanging

    give_up = loop.call_later(CANCEL_GRACE_SECONDS, name_the_stuck)
    try:
        _cancel_all_tasks(loop)
    finally:
        give_up.cancel()


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_or_name_the_stuck


# --- A failed test's report: what the local Letta server logged as errors while it ran ---------
# In CI nothing else is kept, and a failure against the real server should say whether Letta
# itself failed, and how.

LETTA_LOG_AT_START = pytest.StashKey[int]()
LETTA_ERRORS_SHOWN = 120


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    size = harness.letta_log_size()
    if size is not None:
        item.stash[LETTA_LOG_AT_START] = size


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    start = item.stash.get(LETTA_LOG_AT_START, None)
    if not report.failed or start is None:
        return
    errors = harness.letta_errors_since(start)
    if len(errors) > LETTA_ERRORS_SHOWN:
        left_out = len(errors) - LETTA_ERRORS_SHOWN
        errors = [f"[… {left_out} lines before]", *errors[-LETTA_ERRORS_SHOWN:]]
    if errors:
        report.sections.append(("Letta's errors while the test ran", "\n".join(errors)))
