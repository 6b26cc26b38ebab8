"""resonate_async: durable functions as plain ``async def``, on asyncio and trio.

Start with ``Resonate`` (an embedded engine by default), register functions with
``@resonate.register``, and write durable steps as ``await ctx.run(...)``.
"""

from resonate_async._client import Resonate
from resonate_async._codec import Encryptor
from resonate_async._context import Call, Context, Handle, Info
from resonate_async._errors import (
    ApplicationError,
    CanceledError,
    ContextError,
    DecryptionError,
    EncodingError,
    InvalidIdError,
    LeaseLostError,
    NonDeterminismError,
    NotFoundError,
    NotStartedError,
    ProtocolError,
    RegistrationError,
    ResonateError,
    SchemaVersionError,
    StorageLockedError,
    Suspended,
    TimedOutError,
    TransportError,
)
from resonate_async._invoke import Invoker
from resonate_async._logging import ReplayAwareLogger, configure_logging
from resonate_async._records import PromiseRecord, ScheduleRecord
from resonate_async._retry import Constant, Exponential, Linear, Never, RetryPolicy

__all__ = [
    "ApplicationError",
    "Call",
    "CanceledError",
    "Constant",
    "Context",
    "ContextError",
    "DecryptionError",
    "EncodingError",
    "Encryptor",
    "Exponential",
    "Handle",
    "Info",
    "InvalidIdError",
    "Invoker",
    "LeaseLostError",
    "Linear",
    "Never",
    "NonDeterminismError",
    "NotFoundError",
    "NotStartedError",
    "PromiseRecord",
    "ProtocolError",
    "RegistrationError",
    "ReplayAwareLogger",
    "Resonate",
    "ResonateError",
    "RetryPolicy",
    "ScheduleRecord",
    "SchemaVersionError",
    "StorageLockedError",
    "Suspended",
    "TimedOutError",
    "TransportError",
    "configure_logging",
]
__version__ = "0.1.0.dev0"
