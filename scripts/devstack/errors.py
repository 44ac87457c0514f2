"""The local stack's one error type."""

from __future__ import annotations


class StackError(RuntimeError):
    """The stack could not be started; the message says what is missing."""
