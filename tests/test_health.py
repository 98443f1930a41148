"""Probes: ``/healthz`` says the process answers; ``/readyz`` reports the database, the channel
layer and Letta, each with a status and a latency, 503 when one is down, and never hangs with
them. No login, JSON, nothing secret, fit for a load balancer that asks by IP over plain HTTP."""

from __future__ import annotations

import socket
import sys
import time

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from tests.servers import ServerProcess, free_port, server_env

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = {"database", "channel_layer", "letta"}


def secrets_in(body: str) -> list[str]:
    db = django_settings.DATABASES["default"]
    candidates = [django_settings.SECRET_KEY, db.get("PASSWORD") or "", db.get("USER") or ""]
    return [s for s in candidates if len(s) > 3 and s in body]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture
def hanging_port():
    """A server that accepts connections and never answers (the kernel completes handshakes)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_healthz_answers_anyone_with_json_and_sets_no_cookie(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert not response.cookies
    assert response["Cache-Control"] == "no-store"
    assert reverse("healthz") == "/healthz"


def test_probes_answer_a_load_balancer_asking_by_ip_over_plain_http(client, settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200, response.status_code
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # only the probes


def test_probes_take_only_get_and_head(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405
    assert client.head("/healthz").status_code == 200


@pytest.mark.integration
def test_readyz_reports_every_part_up_with_the_real_letta(client, letta_gateway):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    for name, check in body["checks"].items():
        assert check["status"] == "ok", name
        assert isinstance(check["latency_ms"], int | float) and check["latency_ms"] >= 0
    assert not secrets_in(response.content.decode())
    assert django_settings.LETTA_BASE_URL not in response.content.decode()


def test_readyz_says_letta_is_down_with_503(client, settings, closed_port):
    settings.LETTA_GATEWAY = "letta_gateway.client.LettaGateway"
    settings.LETTA_BASE_URL = f"http://127.0.0.1:{closed_port}"
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["letta"]["status"] == "down"
    assert body["checks"]["letta"]["error"] == "LettaUnavailable"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["channel_layer"]["status"] == "ok"
    assert str(closed_port) not in response.content.decode()


def test_a_hanging_letta_cannot_hang_the_probe(settings, hanging_port):
    settings.LETTA_GATEWAY = "letta_gateway.client.LettaGateway"
    settings.LETTA_BASE_URL = f"http://127.0.0.1:{hanging_port}"
    settings.LETTA_TIMEOUT = 60.0  # the app's own reads would wait this long
    settings.LETTACHAT_PROBE_TIMEOUT = 0.5
    started = time.monotonic()
    response = Client().get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["letta"] == {
        "status": "down",
        "error": "timeout",
        "latency_ms": pytest.approx(500, abs=400),
    }
    assert elapsed < 5, elapsed


def test_readyz_says_the_database_and_channel_layer_are_down(tmp_path, closed_port):
    """A server process whose PostgreSQL and Redis do not answer: alive, not ready."""
    port = free_port()
    env = server_env(
        DATABASE_URL=f"postgres://lettachat@127.0.0.1:{closed_port}/lettachat",
        REDIS_URL=f"redis://127.0.0.1:{closed_port}/0",
        LETTA_BASE_URL=f"http://127.0.0.1:{closed_port}",
        LETTACHAT_VAR_DIR=str(tmp_path / "var"),
        LETTACHAT_PROBE_TIMEOUT="1",
        SECRET_KEY="probe-test-secret-key-" + "x" * 40,
    )
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    with ServerProcess([*command, "lettachat.asgi:application"], env=env, log=tmp_path / "log",
                       port=port) as server:  # fmt: skip
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        response = httpx.get(f"{server.url}/readyz", timeout=10)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(
        CHECKS, "down"
    )
    assert "lettachat@" not in response.text and "probe-test-secret" not in response.text
