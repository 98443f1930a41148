"""Settings from the environment: production refuses to start without its secret, and
``.env.example`` names every variable lettachat reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_check(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "LETTACHAT_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_without_a_secret_key_refuses_to_start_and_says_why(tmp_path):
    result = run_check(tmp_path, DEBUG="false", ALLOWED_HOSTS="chat.example.com")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set.")
    assert "secrets.token_urlsafe" in last
    assert not (tmp_path / "var" / "secret_key").exists()  # no key made up behind its back


@pytest.mark.parametrize(
    "env",
    [
        {"DEBUG": "false", "ALLOWED_HOSTS": "chat.example.com", "SECRET_KEY": "x" * 50},
        {"DEBUG": "false"},  # a local run (bin/run): only this machine is served
        {"DEBUG": "true", "ALLOWED_HOSTS": "chat.example.com"},  # development
    ],
)
def test_a_secret_key_or_a_local_run_starts(tmp_path, env):
    result = run_check(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "secret_key").exists() == ("SECRET_KEY" not in env)


def variables_read_by_settings() -> set[str]:
    source = (ROOT / "lettachat" / "settings.py").read_text()
    return set(re.findall(r"\.(?:str|bool|int|float|list|db)\(\s*\"([A-Z][A-Z0-9_]+)\"", source))


def variables_in_the_readme_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {
        name for row in table.splitlines() if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }  # fmt: skip


def variables_in_env_example() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_env_example_names_every_variable_lettachat_reads():
    read = variables_read_by_settings()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "LETTACHAT_VAR_DIR"} <= read
    missing = (read | variables_in_the_readme_table()) - variables_in_env_example()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_the_readme_table_documents_every_variable_but_the_tests_own():
    tests_only = {"TEST_DATABASE_NAME", "LETTA_GATEWAY", "CHANNEL_LAYER_PREFIX"}
    missing = variables_read_by_settings() - variables_in_the_readme_table() - tests_only
    assert not missing, f"add to README's Configuration table: {sorted(missing)}"


@pytest.mark.parametrize(
    ("pubsub", "expected"),
    [
        (None, "lettachat.layers.PubSubChannelLayer"),
        ("false", None),
        ("true", "lettachat.layers.PubSubChannelLayer"),
    ],
)
def test_with_redis_fragments_go_over_pub_sub_unless_turned_off(tmp_path, pubsub, expected):
    base = {k: v for k, v in os.environ.items() if k != "LETTACHAT_FRAGMENTS_PUBSUB"}
    env = {**base, "REDIS_URL": "redis://127.0.0.1:6379/0", "LETTACHAT_VAR_DIR": str(tmp_path)}
    if pubsub is not None:
        env["LETTACHAT_FRAGMENTS_PUBSUB"] = pubsub
    code = (
        "from lettachat import settings as s;"
        "print(s.CHANNEL_LAYERS.get(s.FRAGMENTS_LAYER, {}).get('BACKEND'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)
