"""The embedded runtime's expected errors: one small hierarchy, mapped once to a message by mesh.cli.

Anything that is not a WeirError is a bug and keeps its traceback.
"""

from __future__ import annotations


class WeirError(Exception):
    """An expected failure with a message for the user; meshctl prints it and exits 1."""


class StackError(WeirError):
    """The stack file (or the plan built from it) is missing, malformed or inconsistent."""


class NotRunning(WeirError):
    """No Weir environment is running for the stack."""

    def __init__(self, stack: str) -> None:
        super().__init__(f"no Weir environment is running for stack {stack}; run `meshctl up`")
        self.stack = stack


class StartupError(WeirError):
    """The environment could not be started: port taken, process not ready, supervisor died."""


class Unreachable(WeirError):
    """A local HTTP endpoint (control plane, proxy admin, app chaos port) did not answer."""


class RequestFailed(WeirError):
    """A local HTTP endpoint answered with an error status; the message is its own error text."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
