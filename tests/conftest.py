"""Shared fixtures. The real Letta server, the browser and the live app server live in
``tests/integration/conftest.py`` and ``tests/browser/conftest.py``."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from conversations.letta_gateway import get_gateway
from conversations.models import Agent, Conversation
from tests.fakes import ScriptedGateway

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when a real part is missing, except in CI where a missing part fails the run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def fake_gateway(settings) -> ScriptedGateway:
    settings.LETTA_GATEWAY = "tests.fakes.ScriptedGateway"
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
    return Agent.objects.create(letta_id="agent-visible", name="Helper", visible_to_users=True)


@pytest.fixture
def hidden_agent(db) -> Agent:
    return Agent.objects.create(letta_id="agent-hidden", name="Internal", visible_to_users=False)


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
