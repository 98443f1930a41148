"""Flood limits for the conversation websocket: frames per socket, open sockets per person.

- **Send rate.** At most ``LETTACHAT_SEND_RATE`` ("N/M": N frames in any M seconds) on one socket.
  Every frame counts, well-formed or not; a frame over the limit is answered with an error and
  goes no further (nothing is stored or sent to Letta) and does not count itself, so a person who
  waits is served again.
- **Frame size.** A frame over ``LETTACHAT_MAX_FRAME_BYTES`` (of UTF-8 text, or binary) is
  answered with an error before it is parsed; the socket goes on. The setting stays below the
  server's own cap (daphne drops a connection past 1 MiB), and the page checks it before it
  sends (``static/js/chat.js``), so a person always sees why.
- **Open sockets.** At most ``LETTACHAT_MAX_SOCKETS_PER_USER`` sockets per person at once; more
  are closed with code 4429 before anything else is looked up.

The bookkeeping is process-local (no shared store that a crashed process could leave wrong): with
several server processes the socket cap holds per process, so one person can hold at most
``processes x cap`` sockets. Sockets are tracked weakly, so a socket whose ``disconnect`` never ran
stops counting once it is gone.
"""

from __future__ import annotations

import re
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.conf import settings

CLOSE_TOO_MANY_SOCKETS = 4429

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float


def send_rate() -> Rate:
    """``LETTACHAT_SEND_RATE`` parsed; a malformed value is a configuration error."""
    value = settings.LETTACHAT_SEND_RATE
    match = _RATE.match(str(value))
    if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ValueError(
            f'LETTACHAT_SEND_RATE must look like "10/60" (N frames/M s), not {value!r}'
        )
    return Rate(int(match[1]), float(match[2]))


def _now() -> float:
    return time.monotonic()


# Accepted frames' times, per socket (the consumer instance).
_sends: weakref.WeakKeyDictionary[Any, deque[float]] = weakref.WeakKeyDictionary()
# Open sockets, per user pk.
_sockets: dict[Any, weakref.WeakSet[Any]] = {}
# Which user a counted socket was counted against.
_counted: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def send_wait(consumer: Any) -> float:
    """0 if ``consumer`` may take one more frame now (and count it); else seconds to wait."""
    rate = send_rate()
    now = _now()
    times = _sends.setdefault(consumer, deque())
    while times and now - times[0] >= rate.seconds:
        times.popleft()
    if len(times) >= rate.count:
        return max(rate.seconds - (now - times[0]), 0.001)
    times.append(now)
    return 0.0


def send_refusal(wait: float) -> str:
    seconds = max(1, round(wait))
    return (
        "You are sending messages too fast. "
        f"Wait {seconds} second{'s' if seconds != 1 else ''} and try again."
    )


def socket_open(consumer: Any) -> bool:
    """Count a new socket against its person's cap; False if they already hold the most allowed.

    Anonymous sockets are not counted (the consumer closes them at once).
    """
    user = consumer.scope.get("user")
    if user is None or not user.is_authenticated:
        return True
    sockets = _sockets.setdefault(user.pk, weakref.WeakSet())
    if len(sockets) >= settings.LETTACHAT_MAX_SOCKETS_PER_USER:
        return False
    sockets.add(consumer)
    _counted[consumer] = user.pk
    return True


def socket_closed(consumer: Any) -> None:
    """Stop counting a socket (safe to call for one never counted, and more than once)."""
    _sends.pop(consumer, None)
    user_pk = _counted.pop(consumer, None)
    if user_pk is None:
        return
    sockets = _sockets.get(user_pk)
    if sockets is not None:
        sockets.discard(consumer)
        if not sockets:
            _sockets.pop(user_pk, None)


def sockets_open(user_pk: Any) -> int:
    """How many sockets a person holds in this process."""
    sockets = _sockets.get(user_pk)
    return len(sockets) if sockets is not None else 0


def frame_too_big(text_data: str | None, bytes_data: bytes | None) -> int:
    """The frame's size in bytes if it is over ``LETTACHAT_MAX_FRAME_BYTES``, else 0."""
    limit = settings.LETTACHAT_MAX_FRAME_BYTES
    if bytes_data is not None:
        size = len(bytes_data)
    else:
        text = text_data or ""
        if len(text) * 4 <= limit:  # cannot be over: skip encoding it
            return 0
        size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def frame_refusal(size: int) -> str:
    limit = settings.LETTACHAT_MAX_FRAME_BYTES
    return (
        f"That message is too large to send ({_kib(size)}; the limit is {_kib(limit)}). "
        "Please shorten it."
    )


def _kib(size: int) -> str:
    return f"{int(size / 1024 + 0.5):,} KB" if size >= 1024 else f"{size} bytes"
