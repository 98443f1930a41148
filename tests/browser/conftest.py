"""Headless Chromium against the app served by daphne in a subprocess, talking to the real Letta.

Browser tests run in their own pytest invocation (see README): sync Playwright keeps an event loop
running, which upsets async tests run after it in the same process.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.live import LiveServer, server_env

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


@pytest.fixture
def app_server(transactional_db, letta_url, letta_api_key, tmp_path) -> Iterator[LiveServer]:
    env = server_env(tmp_path, LETTA_BASE_URL=letta_url, LETTA_API_KEY=letta_api_key)
    server = LiveServer(env, tmp_path / "daphne.log")
    server.start()
    try:
        yield server
    finally:
        # Killed, not stopped: a graceful stop waits for replies still running to be handed over
        # (up to LETTACHAT_SHUTDOWN_SECONDS), which no browser test looks at; the tests of
        # shutdown itself are tests/integration/test_processes.py.
        server.kill()


@pytest.fixture
def live_server_url(app_server: LiveServer) -> str:
    return app_server.url


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
