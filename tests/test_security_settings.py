"""Security headers, the Content-Security-Policy, and the production settings.

The policy lets no inline script, inline style, eval, plugin or foreign frame run; every page
carries it. ``tests/browser/test_csp_browser.py`` shows the chat works under it in Chromium.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

from conversations.models import Message

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def pages(logged_in, conversation, agent, fake_gateway):
    """Every kind of page and partial a person gets: (label, response)."""
    Message.objects.create(
        conversation=conversation,
        message_type="assistant",
        content="**hi**",
        created_at="2026-01-01T00:00:00Z",
    )
    anonymous = type(logged_in)()
    return [
        ("login", anonymous.get(reverse("login"))),
        ("agent page", logged_in.get(reverse("agent_detail", args=[agent.letta_id]))),
        ("chat page", logged_in.get(conversation.get_absolute_url())),
        (
            "htmx partial",
            logged_in.get(conversation.get_absolute_url(), headers={"HX-Request": "true"}),
        ),
        ("not found", logged_in.get("/c/conv-nope/")),
        ("admin login", anonymous.get(reverse("admin:login"))),
    ]


def test_every_page_carries_a_policy_that_allows_no_inline_script_or_style(pages):
    for label, response in pages:
        directives = policy(response)
        assert directives["script-src"] == ["'self'"], label
        assert directives["style-src"] == ["'self'"], label
        for name in ("script-src", "style-src", "default-src", "connect-src"):
            assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(directives[name]), (
                label,
                name,
            )
        assert directives["connect-src"] == ["'self'"], label
        assert directives["object-src"] == ["'none'"], label
        assert directives["base-uri"] == ["'none'"], label
        assert directives["frame-ancestors"] == ["'none'"], label
        assert directives["form-action"] == ["'self'"], label
        assert directives["img-src"] == ["'self'"], label


def test_every_page_refuses_framing_and_sniffing(pages):
    for label, response in pages:
        assert response["X-Frame-Options"] == "DENY", label
        assert response["X-Content-Type-Options"] == "nosniff", label
        assert response["Referrer-Policy"] == "same-origin", label


def test_what_a_logged_in_person_is_sent_is_kept_by_no_cache(pages, logged_in, settings):
    for label, response in pages:
        directives = {d.strip() for d in response.get("Cache-Control", "").split(",")}
        if label in ("login", "admin login"):  # anonymous: nothing personal in them
            continue
        assert {"private", "no-store"} <= directives, (label, response.get("Cache-Control"))
    admin = logged_in.get(reverse("admin:index"))  # a redirect for non-staff: also private
    assert "no-store" in admin["Cache-Control"]
    static = logged_in.get("/static/js/chat.js")
    assert "no-store" not in static.get("Cache-Control", ""), "static files stay cacheable"


class _Inline(HTMLParser):
    """Inline script (a <script> with a body or without src), handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self.in_script = names.get("type") != "application/json"  # data, never run
            if self.in_script and not names.get("src"):
                self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{name} on <{tag}>")
            if name == "style":
                self.found.append(f"style attribute on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL in {name} on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.found.append(f"inline script {data.strip()[:40]!r}")


def inline_code(html: str) -> list[str]:
    parser = _Inline()
    parser.feed(html)
    parser.close()
    return parser.found


def test_the_inline_check_itself_spots_inline_code():
    assert inline_code("<script>alert(1)</script>")
    assert inline_code('<p onclick="x()">')
    assert inline_code('<p style="color: red">')
    assert inline_code('<a href="javascript:x()">')
    assert not inline_code('<script src="/static/a.js" defer></script>')


def test_no_page_has_inline_script_handlers_or_styles(pages):
    for label, response in pages:
        assert inline_code(response.content.decode()) == [], label


def test_no_template_has_inline_script_handlers_or_styles():
    """The same, for every template in the project, rendered or not."""
    templates = sorted((ROOT / "templates").rglob("*.html"))
    assert templates
    for path in templates:
        assert inline_code(path.read_text()) == [], path.name


def test_session_and_csrf_cookies_are_http_only_where_it_matters(client, user, settings):
    response = client.post(
        reverse("login"), {"username": user.username, "password": "a-long-test-password"}
    )
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"]
    assert session["samesite"] == "Lax"


# --- Production settings -------------------------------------------------------------------------


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    """The README's production variables (TLS at a proxy), and nothing from this test run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_"))
        and key not in ("BEHIND_TLS_PROXY", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "lettachat.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "chat.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
            "SECURE_COOKIES": "true",
            "BEHIND_TLS_PROXY": "true",
            "LETTACHAT_VAR_DIR": str(tmp_path / "var"),
            **extra,
        }
    )
    return env


def check_deploy(env: dict[str, str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"\((\w+\.[EW]\d+)\)", result.stdout + result.stderr))


def test_the_readme_production_settings_pass_the_deploy_check(tmp_path):
    found = check_deploy(production_env(tmp_path))
    # Justified: with TLS ended at a proxy (BEHIND_TLS_PROXY), the proxy redirects http to
    # https (W008), and HSTS pins every browser to https for the domain for as long as it says,
    # which the deployer opts into with SECURE_HSTS_SECONDS once https works (W004).
    assert found <= {"security.W004", "security.W008"}, found


def test_with_every_option_on_the_deploy_check_finds_nothing(tmp_path):
    env = production_env(
        tmp_path,
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
    )
    assert check_deploy(env) == set()


def test_production_cookies_are_secure_and_https_comes_from_the_proxy(tmp_path):
    code = (
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY,"
        " s.SECURE_PROXY_SSL_HEADER, 'csp.middleware.CSPMiddleware' in s.MIDDLEWARE)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [
        "False",
        "True",
        "True",
        "True",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
        "True",
    ]
