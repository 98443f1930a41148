"""PostgreSQL connections come from a pool, so a busy server does not connect for every call."""

from __future__ import annotations

import pytest
from django.db import connection

from lettachat.aio import db
from tests.conftest import require

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.production_stack]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


async def test_database_calls_from_async_code_reuse_pooled_connections():
    require(connection.vendor == "postgresql", "not on PostgreSQL: the pool is untested")
    assert connection.settings_dict["OPTIONS"].get("pool"), "no connection pool configured"
    max_size = connection.settings_dict["OPTIONS"]["pool"]["max_size"]
    # Each call closes its connection after it (as channels does): without a pool, each of
    # these would be a new PostgreSQL backend.
    pids = {await db(_backend_pid)() for _ in range(3 * max_size)}
    assert len(pids) <= max_size
