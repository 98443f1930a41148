"""Runs whose relay died are taken over by a live process within a bounded time.

A relay says it is alive every ``LETTACHAT_RELAY_HEARTBEAT_SECONDS`` (``Run.relay_seen_at``). In
every server process a reaper looks, every half of ``LETTACHAT_REAP_AFTER_SECONDS``, for running
runs not heard of for longer than that, claims each (one process wins) and follows it from where
it was stored (``actions.reply_adopt``); the pages on it, in every process, are told to catch up
from the new relay. So a run whose process died is followed again within about
``LETTACHAT_REAP_AFTER_SECONDS`` + half of it (30 s by default), with no page needed.

The reaper starts with the first request or socket a process serves (``ensure_running``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from conversations import actions, selectors
from lettachat import shutdown
from lettachat.aio import db

logger = logging.getLogger(__name__)

_reapers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def ensure_running() -> None:
    """Start this event loop's reaper, once (a no-op when it runs, or when turned off)."""
    if not settings.LETTACHAT_REAPER:
        return
    loop = asyncio.get_running_loop()
    task = _reapers.get(loop)
    if task is None or task.done():
        _reapers[loop] = loop.create_task(_reap_forever(), name="lettachat-reaper")


async def reap_once() -> int:
    """Take over every abandoned run this process can claim; how many it took."""
    if shutdown.shutting_down():
        return 0  # this process is handing its own replies over, not taking any
    heard_before = timezone.now() - timedelta(seconds=settings.LETTACHAT_REAP_AFTER_SECONDS)
    taken = 0
    for run in await db(selectors.run_list_abandoned)(heard_before=heard_before):
        if await actions.reply_adopt(run=run, heard_before=heard_before):
            logger.info("took over run %s of conversation %s", run.pk, run.conversation_id)
            taken += 1
    return taken


async def _reap_forever() -> None:
    while True:
        try:
            await reap_once()
        except Exception:
            logger.exception("the reaper failed; trying again")
        await asyncio.sleep(settings.LETTACHAT_REAP_AFTER_SECONDS / 2)
