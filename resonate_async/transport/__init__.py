"""Transports: how the SDK reaches a Resonate engine (embedded, or a server over HTTP)."""

from resonate_async.transport._base import Transport
from resonate_async.transport._embedded import EmbeddedTransport
from resonate_async.transport._http import HttpTransport
from resonate_async.transport._wrapper import WrappedTransport

__all__ = ["EmbeddedTransport", "HttpTransport", "Transport", "WrappedTransport"]
