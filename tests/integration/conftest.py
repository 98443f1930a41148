"""The real Letta server on loopback: the project's own harness installs (once) and starts it.

Set ``LETTA_TEST_URL`` to test against a server you run yourself instead.
"""

from __future__ import annotations

import os

import pytest

from conversations.letta_gateway import LettaGateway, get_gateway
from conversations.models import Agent
from lettachat.local_letta import harness
from tests.conftest import require

TEST_AGENT_NAME = "lettachat-tests"


@pytest.fixture(scope="session")
def letta_url() -> str:
    url = os.environ.get("LETTA_TEST_URL", "")
    if not url:
        try:
            url = harness.start()
        except Exception as exc:  # the harness says what failed and where its log is
            require(False, f"the local Letta server did not start: {exc}")
    require(harness.is_healthy(url), f"no Letta server answers at {url}")
    return url


@pytest.fixture(scope="session")
def letta_agent_info(letta_url):
    """One agent on the real server for the whole run (made once, reused by later runs)."""
    gateway = LettaGateway(base_url=letta_url, api_key="")
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
def letta_gateway(settings, letta_url) -> LettaGateway:
    settings.LETTA_BASE_URL = letta_url
    settings.LETTA_API_KEY = ""
    settings.LETTA_GATEWAY = "conversations.letta_gateway.LettaGateway"
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
    )
