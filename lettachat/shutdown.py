"""Graceful shutdown: SIGTERM ends the process within a bounded time, and loses no reply.

On SIGTERM (daphne's, uvicorn's and gunicorn's signal to stop), before the server's own handling:

1. every socket of this process is closed with ``CLOSE_RESTARTING`` (4012, "server restarting"),
   which pages answer by reconnecting (to another process, behind a load balancer);
2. the replies this process relays are handed over: their runs are marked as unheard-of, so the
   reaper of another process takes them over at its next look (``conversations.relay.reaper``),
   and their relays stop here (the runs go on in Letta);
3. the server's own handler runs (daphne and uvicorn stop serving), and a watchdog ends the
   process after ``LETTACHAT_SHUTDOWN_SECONDS`` whatever is still running (a worker thread stuck
   in a synchronous call kept daphne alive for minutes after it gave up its port).

Installed on the first request or socket the process serves (it needs the running event loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import threading
import weakref
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

CLOSE_RESTARTING = 4012

_sockets: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_shutting_down = False


def track(consumer: Any) -> None:
    """A socket to close when the process goes away."""
    _sockets.add(consumer)


def untrack(consumer: Any) -> None:
    _sockets.discard(consumer)


def shutting_down() -> bool:
    return _shutting_down


def install() -> None:
    """Take SIGTERM first (once per process; the server's handler is called after ours)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        global _shutting_down
        if _shutting_down:
            return
        _shutting_down = True
        # A signal lands in whatever context the main thread had (a request's id, say): log and
        # shut down in a fresh one, so no request is blamed for it.
        contextvars.Context().run(
            logger.info, "SIGTERM: closing sockets, handing replies over, stopping"
        )
        _watchdog(settings.LETTACHAT_SHUTDOWN_SECONDS)
        loop.call_soon_threadsafe(_start_graceful, loop, previous, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True


def _start_graceful(
    loop: asyncio.AbstractEventLoop, previous: Any, signum: int, frame: Any
) -> None:
    async def run() -> None:
        try:
            await asyncio.wait_for(_graceful(), timeout=settings.LETTACHAT_SHUTDOWN_SECONDS / 2)
        except Exception:
            logger.exception("graceful shutdown did not finish")
        finally:
            _call_previous(previous, signum, frame)

    loop.create_task(run(), name="lettachat-shutdown", context=contextvars.Context())


async def _graceful() -> None:
    from conversations import actions

    for consumer in list(_sockets):
        try:
            await consumer.close(code=CLOSE_RESTARTING)
        except Exception:
            logger.exception("could not close a socket")
    await actions.relays_hand_over()


def _call_previous(previous: Any, signum: int, frame: Any) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _watchdog(seconds: float) -> None:
    def end_now() -> None:
        logger.warning("still running %s s after SIGTERM: exiting", seconds)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, end_now)
    timer.daemon = True
    timer.start()
