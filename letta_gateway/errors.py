"""The one error family of the Letta integration: ``str(error)`` is fit to show a person."""

from __future__ import annotations


class LettaError(Exception):
    """Something went wrong talking to Letta. ``str(error)`` is fit to show a person."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LettaUnavailable(LettaError):
    """Letta could not be reached, or did not answer in time.

    ``reached``: the request may have reached Letta (it timed out, or the connection broke after
    it was sent), so whatever it asked for may have happened. False: it never left (refused).
    """

    def __init__(self, message: str, *, status: int | None = None, reached: bool = True) -> None:
        super().__init__(message, status=status)
        self.reached = reached


class LettaNotFound(LettaError):
    """Letta does not know the agent, conversation or run."""


class LettaBusy(LettaError):
    """The conversation already has a run in progress (HTTP 409); ``run_id`` names it if known."""

    def __init__(self, message: str, *, status: int | None = 409, run_id: str = "") -> None:
        super().__init__(message, status=status)
        self.run_id = run_id


class LettaApprovalPending(LettaError):
    """The conversation waits for a person's answer to a tool call's approval request: Letta takes
    no other message until it has one (HTTP 409 ``PENDING_APPROVAL``)."""
