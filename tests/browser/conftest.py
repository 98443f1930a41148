"""Headless Chromium against the app served by daphne in a subprocess, talking to the real Letta.

Browser tests run in their own pytest invocation (see README): sync Playwright keeps an event loop
running, which upsets async tests run after it in the same process.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import require

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    """The test database the test process made, as a URL for the server process."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def live_server_url(transactional_db, letta_url, tmp_path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "LETTA_BASE_URL": letta_url,
        "LETTA_API_KEY": "",
        "LETTACHAT_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "lettachat.settings",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = (tmp_path / "daphne.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "lettachat.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"daphne did not start: {(tmp_path / 'daphne.log').read_text()[-2000:]}")
        time.sleep(0.05)  # polling a port with a deadline, not synchronising on time
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="session")
def browser():
    require(
        shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server_url):
    """A fresh browser context; closed before the server stops (its sockets go first)."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.wait_for_function = _csp_safe_wait(page.wait_for_function)
    yield page
    context.close()


_FUNCTION = re.compile(r"\s*(async\s+)?(function\b|\([^()]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")


def _csp_safe_wait(wait_for_function):
    """Playwright polls a bare expression with eval(), which the app's CSP forbids (no
    'unsafe-eval'); a function it can call directly. Wrap bare expressions in one."""

    def wait(expression: str, **kwargs):
        if not _FUNCTION.match(expression):
            expression = f"() => ({expression})"
        return wait_for_function(expression, **kwargs)

    return wait
