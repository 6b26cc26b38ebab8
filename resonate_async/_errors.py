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


class Suspended(BaseException):
    """The execution must wait: a durable dependency it awaits is still pending.

    A ``BaseException``, so ``except Exception`` in user code cannot swallow it. It unwinds the
    durable function to the driver, which suspends the task until a dependency settles and
    then replays the function from the top. Never raise or catch it yourself.
    """

    def __init__(self, promise_id: str) -> None:
        super().__init__(promise_id)
        self.promise_id = promise_id


class ApplicationError(ResonateError):
    """A durable function failed with an exception type this process cannot rebuild.

    ``type_name`` and ``module`` name the original exception type; register the type with
    ``resonate.register_error(MyError)`` to get instances of it instead. ``hint`` (shown in
    ``str()``, never stored) says why this process could not rebuild it.
    """

    def __init__(self, message: str, *, type_name: str = "", module: str = "",
                 hint: str = "") -> None:
        text = f"{type_name}: {message}" if type_name else message
        super().__init__(f"{text} ({hint})" if hint else text)
        self.message = message
        self.type_name = type_name
        self.module = module
        self.hint = hint


class EncodingError(ResonateError, TypeError):
    """A value could not be encoded (or decoded) for the wire."""


class NonDeterminismError(ResonateError):
    """On replay the durable function asked for a different step than the one recorded.

    Durable functions must take the same steps in the same order on every run: move
    non-deterministic decisions (time, randomness, I/O) into ``ctx.run`` steps, or give
    changed code a new function version.
    """


class RegistrationError(ResonateError):
    """A function could not be registered, or a name is not registered."""


class TimedOutError(ResonateError):
    """The promise reached its deadline before it was settled (``rejected_timedout``)."""


class CanceledError(ResonateError):
    """The promise was canceled (``rejected_canceled``)."""


class NotStartedError(ResonateError):
    """The Resonate instance is not running: enter it first with ``async with resonate:``."""


class ContextError(ResonateError):
    """A ``Context`` or handle was used outside the durable execution that owns it."""


class LeaseLostError(ResonateError):
    """This worker no longer holds the task (its lease expired or it was settled elsewhere)."""


class TransportError(ResonateError):
    """The Resonate engine or server could not be reached (connection refused, reset, ...)."""


class NotFoundError(ResonateError, LookupError):
    """No promise, task or schedule has the given id."""


class StorageLockedError(ResonateError):
    """Another live process holds the embedded engine's SQLite file."""


class SchemaVersionError(ResonateError):
    """The SQLite file was written by a newer, incompatible version of resonate_async."""


class DecryptionError(EncodingError):
    """A stored value could not be decrypted with this process's ``Encryptor`` (another key,
    or a value written without encryption). A worker that meets one gives the task back to
    others instead of recording a failure: the value is not wrong, this worker's key is."""


class RequestTooLargeError(ProtocolError):
    """The server refused a request as too large (HTTP 413): sending it again cannot help."""
