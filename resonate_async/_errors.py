"""The one exception hierarchy of resonate_async: everything raised to users is a ResonateError."""

from __future__ import annotations


class ResonateError(Exception):
    """Base class of every error resonate_async raises on purpose."""


class ProtocolError(ResonateError):
    """A message on the wire is malformed or does not match the Resonate protocol.

    ``kind`` names the operation (or push message) involved, when known.
    """

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(f"{kind}: {message}" if kind else message)
        self.kind = kind


class InvalidIdError(ResonateError, ValueError):
    """A promise or schedule id breaks the id rules (empty, NUL, or ':' in a root id)."""
