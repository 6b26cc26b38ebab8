"""Transports: how the SDK reaches a Resonate engine (embedded, a server over HTTP, or an
engine whose state many processes share in PostgreSQL)."""

from resonate_async.transport._base import Transport
from resonate_async.transport._embedded import EmbeddedTransport
from resonate_async.transport._http import HttpTransport
from resonate_async.transport._postgres import PostgresTransport
from resonate_async.transport._wrapper import WrappedTransport

__all__ = ["EmbeddedTransport", "HttpTransport", "PostgresTransport", "Transport",
           "WrappedTransport"]
