"""The ORM from async code (the consumer, the relay).

``db(func)`` is channels' ``database_sync_to_async`` run on a pool of threads
(``LETTACHAT_DB_THREADS``) instead of asgiref's one thread-sensitive thread. On that one thread
every socket's and every reply's database calls queue behind each other: with a few hundred
replies in flight a call waited seconds for a turn that took a millisecond (bench/RESULTS.md).
Each caller still awaits its own calls one at a time, so a reply's writes stay in order; only
different replies and sockets overlap. Every function run this way is self-contained: its own
queries and transaction, nothing kept in the thread. Like ``database_sync_to_async`` it closes
the thread's connection before and after (with the pool of ``settings.DATABASES``, it goes back
to the pool).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
R = TypeVar("R")


@cache
def _executor() -> ThreadPoolExecutor:
    # The process's own threads, not the event loop's default executor: a fixed number, matched
    # to the connection pool, that outlive any one event loop (as asgiref's thread does).
    return ThreadPoolExecutor(settings.LETTACHAT_DB_THREADS, thread_name_prefix="lettachat-db")


def db(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    wrapped: Callable[P, Awaitable[R]] = DatabaseSyncToAsync(
        func, thread_sensitive=False, executor=_executor()
    )
    return wrapped


def db_close_connections() -> None:
    """Close the connection each database thread holds (it goes back to the pool).

    ``db`` closes it after every call already; channels' test communicator turns that off, so the
    test suite calls this before it drops its database.
    """
    threads = settings.LETTACHAT_DB_THREADS
    everyone = threading.Barrier(threads)

    def close(_: int) -> None:
        everyone.wait(timeout=30)  # one job per thread: each waits until all threads have one
        connections.close_all()

    list(_executor().map(close, range(threads)))
