"""Ctrl-C for the terminal chat: taken at once, acted on only where the chat is ready for it.

A plain SIGINT handler is not enough at the prompt. Readline notices a signal only when it
interrupts its ``select()``; one that lands a moment earlier (while the prompt is being written)
sets CPython's flag, and readline then waits in ``select()`` for a key: the Ctrl-C is lost until
the person types something. So SIGINT is never delivered to a handler here:

- every thread holds SIGINT back, and a thread of its own takes it with ``sigwait`` and counts it;
- it then nudges the main thread with SIGUSR1, again and again (counting the Ctrl-Cs typed
  meanwhile), until the main thread has taken them all: a nudge that lands outside readline's
  ``select()`` is followed by one that lands in it;
- the main thread lets the nudge in only inside ``interruptible()`` blocks (the prompt, a reply
  being followed, a question), where its handler raises ``KeyboardInterrupt`` once per Ctrl-C
  counted; nudges beyond the count do nothing. Elsewhere the Ctrl-C waits for the next such block,
  so a command is never interrupted half-way and a second Ctrl-C typed at once after the first
  finds the prompt ready for it;
- a nudge that arrives in a readline hook (``quiet``) waits for the next one: readline swallows
  an exception raised in its hooks, and the Ctrl-C would be lost with it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

NUDGE = signal.SIGUSR1
RETRY_SECONDS = 0.05  # between two nudges of a Ctrl-C not yet taken


class CtrlC:
    """Ctrl-C, delivered to the main thread as ``KeyboardInterrupt`` (see the module)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counted = 0  # typed and not yet raised in the main thread
        self.main = threading.main_thread().ident
        self.watcher: threading.Thread | None = None
        self.quiet_code: set[CodeType] = set()
        self.inside = False  # the main thread is in an ``interruptible`` block

    def install(self) -> None:
        """From the main thread, before it starts any other thread: they inherit the hold."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, NUDGE})
        signal.signal(NUDGE, self._nudged)
        if self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, name="ctrl-c", daemon=True)
            self.watcher.start()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Ctrl-C reaches this block (as ``KeyboardInterrupt``), a waiting one at its start."""
        self.inside = True
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {NUDGE})
            yield
        finally:
            # A nudge let in just before this is handled where the block is left: not raised.
            self.inside = False
            signal.pthread_sigmask(signal.SIG_BLOCK, {NUDGE})

    def quiet(self, function: F) -> F:
        """``function`` is run where an exception is swallowed (a readline hook): no Ctrl-C is
        raised while it runs, the next nudge raises it."""
        self.quiet_code.add(function.__code__)
        return function

    def _watch(self) -> None:
        while True:
            if self._waiting():
                signal.pthread_kill(self.main, NUDGE)  # type: ignore[arg-type]
                typed = signal.sigtimedwait({signal.SIGINT}, RETRY_SECONDS) is not None
            else:
                typed = bool(signal.sigwait({signal.SIGINT}))
            if typed:
                with self.lock:
                    self.counted += 1

    def _waiting(self) -> bool:
        with self.lock:
            return self.counted > 0

    def _nudged(self, signum: int, frame: FrameType | None) -> None:
        if not self.inside:
            return
        while frame is not None:
            if frame.f_code in self.quiet_code:
                return
            frame = frame.f_back
        with self.lock:
            if not self.counted:
                return
            self.counted -= 1
        raise KeyboardInterrupt


ctrl_c = CtrlC()
interruptible = ctrl_c.interruptible
