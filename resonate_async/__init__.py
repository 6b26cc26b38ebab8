"""resonate_async: durable functions as plain ``async def``, on asyncio and trio."""

from resonate_async._errors import InvalidIdError, ProtocolError, ResonateError

__all__ = ["InvalidIdError", "ProtocolError", "ResonateError"]
__version__ = "0.1.0.dev0"
