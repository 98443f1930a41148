"""README "Production", followed word for word in a copy of the project, on PostgreSQL and Redis
against the real Letta server: ``.env`` filled in from ``.env.example``, the set-up block, then
gunicorn with two uvicorn workers (a reply started through one streams live to a tab on the
other; a conversation made on one is listed by the other), then daphne."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets
from django.conf import settings
from django.db import connection

from tests.conftest import require
from tests.page_model import streams_a_piece
from tests.servers import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.production_stack, pytest.mark.integration]

PASSWORD = "a-long-production-password"
AGENT_VARIABLES = ("DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "DJANGO_ALLOW_ASYNC_UNSAFE")


def readme_blocks() -> tuple[str, str, str]:
    """The set-up, gunicorn and daphne blocks of README "Production", as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Production\n", 1)[1].split("\n## ", 1)[0]
    setup, gunicorn, daphne = re.findall(r"```sh\n(.*?)```", section, re.S)
    return setup, gunicorn, daphne


def test_the_readme_says_what_this_test_follows():
    setup, gunicorn, daphne = readme_blocks()
    assert setup.startswith("set -a; . ./.env; set +a\n")
    assert "uv sync --frozen --no-dev --extra uvicorn" in setup
    assert "-k uvicorn_worker.UvicornWorker" in gunicorn and "daphne" in daphne


# --- A copy of the project, with its .env and its own database -----------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database of the test's own (the recipe migrates it)."""
    require(connection.vendor == "postgresql", "not on PostgreSQL: production is untested")
    db = connection.settings_dict
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"],
              "password": db["PASSWORD"] or None, "dbname": "postgres"}  # fmt: skip
    name = f"lettachat_production_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    yield f"postgres://{auth}@{params['host']}:{params['port']}/{name}"
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def project_copy(target: Path) -> Path:
    """The project's files as a checkout has them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def fill_env_file(copy: Path, values: dict[str, str]) -> None:
    """``cp .env.example .env`` and fill it in: each variable given gets its value."""
    lines = []
    for line in (copy / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        if "=" in line and not line.startswith("#") and name in values:
            line = f"{name}={shlex.quote(values.pop(name))}"
        lines.append(line)
    assert not values, f"not in .env.example: {sorted(values)}"
    (copy / ".env").write_text("\n".join(lines) + "\n")


class Project:
    """The copy, and how the README runs things in it (the .env loaded, uv from the PATH)."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        names = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (path / ".env.example").read_text(), re.M))
        self.env = {k: v for k, v in os.environ.items()
                    if k not in names and k not in AGENT_VARIABLES}  # fmt: skip
        self.load_env = readme_blocks()[0].splitlines()[0]

    def run(self, script: str, **extra: str) -> str:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=self.path, env={**self.env, **extra},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, f"{script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def manage(self, command: str, **extra: str) -> str:
        return self.run(f"{self.load_env}\nuv run --no-sync manage.py {command}", **extra)

    def serve(self, block: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", f"{self.load_env}\n{block}"], cwd=self.path,
                env={**self.env, "PORT": str(self.port), **extra}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, process, log, seconds=120)
        return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """The server's process group: the shell's exec'd uv and everything under it."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory, database, letta_url, letta_agent_info) -> Project:
    """Set up once for the module (a copy, its virtualenv, a migrated database)."""
    require(bool(settings.REDIS_URL), "REDIS_URL is not set: production is untested")
    require(shutil.which("uv") is not None, "uv is not on the PATH")
    tmp_path = tmp_path_factory.mktemp("production")
    copy = project_copy(tmp_path / "lettachat")
    port = free_port()
    fill_env_file(copy, {
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "DATABASE_URL": database,
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": f"lettachat-production-{uuid.uuid4().hex[:8]}",
        "LETTA_BASE_URL": letta_url,
        "LETTA_API_KEY": "",
        # The test is the TLS proxy: it says https in X-Forwarded-Proto.
        "SECURE_COOKIES": "true",
        "BEHIND_TLS_PROXY": "true",
        "LETTACHAT_VAR_DIR": str(tmp_path / "var"),
    })  # fmt: skip
    project = Project(copy, port)
    project.run(readme_blocks()[0])  # the set-up block, as written
    project.manage("createsuperuser --noinput --username boss --email boss@example.com",
                   DJANGO_SUPERUSER_PASSWORD=PASSWORD)  # fmt: skip
    project.manage("sync_agents")
    project.manage(
        'shell -c "from conversations.models import Agent; '
        f"Agent.objects.filter(letta_id='{letta_agent_info.letta_id}').update("
        'visible_to_users=True)"'
    )
    return project


# --- A browser's side, and which worker served it ------------------------------------------------


class Tab:
    """What a browser behind the TLS proxy sends: cookies (Secure ones too: the proxy speaks
    https for it), the proxy's X-Forwarded-Proto, an Origin on POSTs; a new connection each
    time, so requests spread over the workers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"https://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )  # fmt: skip

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def request(self, method: str, path: str, rid: str, data: dict[str, str] | None = None):
        headers = {"X-Forwarded-Proto": "https", "X-Request-ID": rid}
        if self.cookies:
            headers["Cookie"] = self.cookie_header()
        if method == "POST":
            headers["Origin"] = self.origin
            data = {**(data or {}), "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")}
        response = self.client.request(method, path, headers=headers, data=data)
        for header in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response


def worker_of(log: Path, rid: str, seconds: float = 15) -> int:
    """The pid of the process that logged request ``rid``."""
    deadline = time.monotonic() + seconds
    while True:
        found = re.search(rf"pid=(\d+) rid={re.escape(rid)} ", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if time.monotonic() > deadline:
            pytest.fail(f"no log line for request {rid}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)  # polling the log against a deadline


def assert_becomes_ready(port: int, seconds: float = 60) -> dict[str, dict[str, str]]:
    """Ask /readyz as a load balancer does, until it says ready: a process just started may
    not be yet (its first connections to PostgreSQL, Redis and Letta are being made)."""
    deadline = time.monotonic() + seconds
    while True:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        if ready.status_code == 200:
            return ready.json()
        assert ready.status_code == 503, ready.text
        if time.monotonic() > deadline:
            pytest.fail(f"never ready: {ready.text}")
        time.sleep(0.5)  # a load balancer's probe interval, against a deadline


MAX_TRIES = 60  # (1/2)^60: a second worker is found unless there is none


def test_two_gunicorn_workers_share_conversations_and_stream_replies_across(
    project, tmp_path, letta_agent_info
):
    log = tmp_path / "gunicorn.log"
    server = project.serve(readme_blocks()[1], log, WEB_CONCURRENCY="2")
    try:
        tab = Tab(project.port)
        assert tab.request("GET", "/healthz", "probe-1").json() == {"status": "ok"}
        assert_becomes_ready(project.port)
        tab.request("GET", "/login/", "login-1")
        login = tab.request(
            "POST", "/login/", "login-2", {"username": "boss", "password": PASSWORD}
        )
        assert login.status_code == 302, login.text[-500:]
        agent = letta_agent_info.letta_id

        made = tab.request("POST", f"/a/{agent}/new/", "create")
        assert made.status_code == 302, made.text[-500:]
        conversation = made.headers["location"].strip("/").split("/")[-1]
        maker = worker_of(log, "create")
        for attempt in range(MAX_TRIES):
            listed = tab.request("GET", f"/a/{agent}/", f"list-{attempt}")
            if worker_of(log, f"list-{attempt}") != maker:
                break
        else:
            pytest.fail("every request went to one worker")
        assert listed.status_code == 200 and conversation in listed.text

        frames = asyncio.run(two_tabs(tab, log, conversation))
        tokens = [f for f in frames if streams_a_piece(f)]
        assert len(tokens) >= 3, frames  # live, piece by piece, not only the final message
        assert frames.index(tokens[0]) < len(frames) - 1
        assert "slow hello from tab A" in "".join(frames)
        assert 'data-busy="false"' in frames[-1]
    finally:
        stop(server)
    lines = [line for line in log.read_text().splitlines() if " rid=" in line]
    assert len({re.search(r"pid=(\d+)", line).group(1) for line in lines}) == 2, lines


async def two_tabs(tab: Tab, log: Path, conversation: str) -> list[str]:
    """Tab A on one worker sends a message; tab B, on the other, reads until the reply ends."""
    url = f"ws://127.0.0.1:{tab.port}/ws/c/{conversation}/"

    def connect(rid: str):
        return websockets.connect(url, origin=tab.origin, additional_headers={
            "Cookie": tab.cookie_header(), "X-Request-ID": rid,
        })  # fmt: skip

    resume = json.dumps({"type": "resume", "after": 0})
    async with connect("tab-a") as a:
        writer = await asyncio.to_thread(worker_of, log, "tab-a")
        for attempt in range(MAX_TRIES):
            b = await connect(f"tab-b-{attempt}")
            if await asyncio.to_thread(worker_of, log, f"tab-b-{attempt}") != writer:
                break
            await b.close()
        else:
            pytest.fail("every socket went to one worker")
        async with b:
            for tab_socket in (a, b):
                await tab_socket.send(resume)
                await asyncio.wait_for(tab_socket.recv(), 30)  # the catch-up
            await a.send(
                json.dumps({"message": "slow hello from tab A", "otid": str(uuid.uuid4())})
            )
            frames: list[str] = []
            while not frames or 'data-busy="false"' not in frames[-1]:
                frames.append(str(await asyncio.wait_for(b.recv(), 60)))
            return frames


def test_daphne_serves_the_same_set_up(project, tmp_path):
    log = tmp_path / "daphne.log"
    server = project.serve(readme_blocks()[2], log)
    try:
        ready = assert_becomes_ready(project.port)
        assert {c["status"] for c in ready["checks"].values()} == {"ok"}
        page = httpx.get(f"http://127.0.0.1:{project.port}/login/",
                         headers={"X-Forwarded-Proto": "https"})  # fmt: skip
        assert page.status_code == 200
        assert "/static/css/app." in page.text  # collected static files, served by WhiteNoise
    finally:
        stop(server)
