"""The one place that maps an engine's answer status to an error for the user."""

from __future__ import annotations

from typing import Final

from resonate_async._errors import NotFoundError, ProtocolError, ResonateError
from resonate_async.protocol import Response

# Success, as servers send it: the Resonate server answers 200; other implementations answer
# 201 for a creation (protocol.md, our decision 7). HttpTransport reports both as 200.
SUCCESS: Final = frozenset((200, 201))


def expect_ok(response: Response, kind: str, *, subject: str = "") -> None:
    """Return if ``response`` is a success (200 or 201); else raise the error its status
    stands for.

    404 → ``NotFoundError``; other 4xx → ``ResonateError`` carrying the engine's message;
    anything else → ``ProtocolError``. ``subject`` names what the request was about.
    """
    status = response.status
    if status in SUCCESS:
        return
    about = f" {subject}" if subject else ""
    if status == 404:
        raise NotFoundError(f"{kind}{about}: not found ({response.data})")
    if 400 <= status < 500:
        raise ResonateError(f"{kind}{about} was refused ({status}): {response.data}")
    raise ProtocolError(f"answered {status}: {response.data}", kind=kind)
